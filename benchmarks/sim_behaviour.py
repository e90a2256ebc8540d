"""Measure the simulated LM's behaviour on the full Banking77 test set (3,080 items).

    BANKING77_DIR=... python benchmarks/sim_behaviour.py [RESULTS_DIR]

Calls the policy directly (no HTTP), as tests/test_sim_policy_accuracy.py does, with
the task app's exact request (forced tool call) or DSPy's ChatAdapter prompt of the
suite's own `query -> intent` program, and scores with the suite's one label rule.
Prints fixed prompts (baseline, format rule, a hint-rich proposal, demos); given a
results directory of `run_comparison.py`, also every optimized prompt there, and each
few-shot prompt with its demos removed. The simulated-LM numbers in docs/simulated-lm.md
come from here.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from mipro_bench.data import Example, load_banking77, make_splits
from mipro_bench.labels import intent_from_tool_arguments, map_to_label
from mipro_bench.offline.sim import SimulatedLM
from mipro_bench.prompt import BASELINE_INSTRUCTION, build_messages, classify_tool, tool_choice
from mipro_bench.results import Demo, OptimizedPrompt
from tests.proposal_prompt import LabelledExample, clean_instruction, proposal_messages

LM = SimulatedLM()


def task_app_accuracy(instruction: str, items: tuple[Example, ...], labels: tuple[str, ...]):
    ok = 0
    for ex in items:
        body = {"model": "gpt-4.1-nano", "messages": build_messages(instruction, ex.text, labels),
                "tools": [classify_tool(labels)], "tool_choice": tool_choice(),
                "temperature": 0.0}
        call = LM.complete(body)["choices"][0]["message"]["tool_calls"][0]
        answer = intent_from_tool_arguments(call["function"]["arguments"])
        ok += map_to_label(answer, labels) == ex.label
    return ok / len(items)


def dspy_accuracy(prompt: OptimizedPrompt, items: tuple[Example, ...], labels: tuple[str, ...]):
    import dspy

    from mipro_bench.executors.dspy_program import build_program

    predictor = build_program(labels, prompt, "predict").predictors()[0]
    adapter, ok = dspy.ChatAdapter(), 0
    for ex in items:
        messages = adapter.format(predictor.signature, list(predictor.demos), {"query": ex.text})
        content = LM.complete({"model": "gpt-4.1-nano", "messages": messages,
                               "temperature": 0.0})["choices"][0]["message"]["content"]
        try:
            answer = adapter.parse(predictor.signature, content)["intent"]
        except Exception:  # AdapterParseError: scored wrong, as the executor does
            answer = None
        ok += map_to_label(answer, labels) == ex.label
    return ok / len(items)


def main(argv: list[str]) -> None:
    data = load_banking77()
    full = make_splits(data, train_size=231, val_size=154, test_size=3080, seed=0)
    labels, test = tuple(full.labels), full.test.examples
    rule = "Respond with only the intent name, spelled exactly as listed."
    examples = [LabelledExample(ex.text, ex.label) for ex in full.train.examples]
    messages = proposal_messages(BASELINE_INSTRUCTION, examples, "Be specific.", task="Classify.")
    proposals = [clean_instruction(LM.complete({"messages": messages, "temperature": t})
                                   ["choices"][0]["message"]["content"])
                 for t in (0.7, 0.9, 1.0, 1.1, 1.3)]
    rich = max(proposals, key=lambda text: text.count("\n"))
    rich = "\n".join(line for line in rich.splitlines() if line.strip() != rule)

    def demos(items: tuple[Example, ...]) -> str:
        return "\n\n".join(f"Query: {ex.text}\nIntent: {ex.label}" for ex in items)

    fixed = {
        "baseline": BASELINE_INSTRUCTION,
        "baseline + format rule": f"{BASELINE_INSTRUCTION}\n{rule}",
        "hint-rich proposal, no format rule": rich,
        "hint-rich proposal + format rule": f"{rich}\n{rule}",
        "baseline + 4 demos (Query/Intent lines)":
            f"{BASELINE_INSTRUCTION}\n\nExamples:\n{demos(full.val.examples[:4])}",
        "baseline + 2 demos per intent":
            f"{BASELINE_INSTRUCTION}\n\nExamples:\n{demos(full.val.examples)}",
    }
    print(f"full test set, {len(test)} items, task-app request (forced tool call):")
    for name, instruction in fixed.items():
        print(f"  {name:42s} {100 * task_app_accuracy(instruction, test, labels):5.1f} %")
    base = OptimizedPrompt(instruction=BASELINE_INSTRUCTION, demos=())
    print(f"  {'baseline via DSPy ChatAdapter (str output)':42s} "
          f"{100 * dspy_accuracy(base, test, labels):5.1f} %")
    if not argv:
        return
    print(f"optimized prompts in {argv[0]}, full test set:")
    for path in sorted(Path(argv[0]).glob("banking77_*.json")):
        if path.name.endswith(".program.json"):
            continue
        record = json.loads(path.read_text())
        op = record.get("optimized_prompt")
        if not op:
            continue
        prompt = OptimizedPrompt(instruction=op["instruction"],
                                 demos=tuple(Demo(**d) for d in op["demos"]))
        config = record["config"]
        name = f"{record['optimizer']} {config.get('mode')} seed {config.get('seed')}"
        if record["optimizer"].startswith("dspy"):
            score = dspy_accuracy(prompt, test, labels)
            line = f"  {name:42s} {100 * score:5.1f} %"
            if prompt.demos:
                bare = OptimizedPrompt(instruction=prompt.instruction, demos=())
                line += (f"   demos removed {100 * dspy_accuracy(bare, test, labels):5.1f} %"
                         f" ({len(prompt.demos)} demos)")
            print(line)
        else:
            score = task_app_accuracy(prompt.instruction, test, labels)
            print(f"  {name:42s} {100 * score:5.1f} %")


if __name__ == "__main__":
    main(sys.argv[1:])
