"""The simulated LM as Synth's ReAct instruction proposer (synth-optimizers 0.1.1).

Synth's MIPROv2 proposer (`core/proposer_openenv.py`) is an agent loop: every turn
is a chat completion offering ~42 native tools with `tool_choice: "required"`,
and the history replays the agent's tool calls and the tools' JSON results. The
simulated LM plays the model in that loop the way a capable one would, reading
only what the loop shows it (the offered tools, the orientation message, the tool
results), never the data set.

Recognised (policy.py): tools include `add_instruction_candidate` and `finish`, and
tool_choice is "required", "auto" or absent (a forced named tool is the task app's).

The turn sequence, re-derived from the history on every turn (no hidden state):
1. One batched read turn: `list_component_options` (the exact current instruction;
   `list_registered_candidates` too when its preview is truncated) and
   `list_sampled_train_rows` (the labelled rows: as many as the orientation counts, 12-50).
2. Write turns of 1-2 `add_instruction_candidate` calls (the system prompt asks for
   "1-2 targeted" patches), each a fresh proposal of proposer.py, the behaviour
   model every simulated optimizer shares: the task statement, a seeded format rule,
   `intent: words` hint lines for a seeded share of the intents in the rows seen.
3. Between write batches one informative read (a truncated row in full, the
   registered candidates): the session refuses more than
   `max_consecutive_patch_actions` writes in a row; a stricter limit is learned
   from the refusal's payload.
4. `finish` once a write is refused for a session limit (max_instruction_patches,
   max_patch_actions_per_session), after three rejected writes in a row (with
   `list_registered_candidates` first, as the prompt says), or on the last turn.
A refusal that asks for reads (min reads, a grounding or row-evidence read,
distinct read tools, runbook evidence) is answered with those reads; a read that
failed is not repeated; an unknown tool or a garbage result is skipped over.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from mipro_bench.offline.sim.examples import pair_from_mapping
from mipro_bench.offline.sim.formats import Choice
from mipro_bench.offline.sim.proposer import DEFAULT_TASK, HINTS_HEADER, propose_instruction
from mipro_bench.offline.sim.request import ChatRequest

ADD = "add_instruction_candidate"
FINISH = "finish"
READ_OPTIONS = "list_component_options"
READ_CANDIDATES = "list_registered_candidates"
READ_ROWS = "list_sampled_train_rows"
READ_ROW = "get_sampled_train_row"
READ_COMPONENTS = "list_components"
READ_SUMMARY = "get_grounding_summary"
# The package's read classes (proposer_openenv._GROUNDING_READ_ACTIONS and
# _ROW_EVIDENCE_READ_ACTIONS), restricted to the reads this model uses.
GROUNDING_READS = frozenset({READ_ROWS, READ_ROW, READ_SUMMARY})
EVIDENCE_READS = frozenset({READ_ROWS, READ_ROW})
LIMIT_REFUSALS = frozenset(
    {"max_instruction_patches_reached", "max_patch_actions_per_session_reached"}
)
READ_REFUSALS = frozenset(
    {
        "min_read_actions_before_patch_not_met",
        "grounding_read_required_before_patch",
        "distinct_read_tools_required_before_patch",
        "row_evidence_read_required_before_second_patch",
        "max_consecutive_patch_actions_reached",
        "runbook_patch_before_evidence",
    }
)
# finish reasons (the session's stop reason)
FINISH_LIMIT = "patch_limit_reached"  # a write was refused for a session limit
FINISH_REJECTED = "patches_rejected"  # three writes in a row rejected
FINISH_TURNS = "turns_exhausted"  # the last turn
FINISH_NOTHING = "no_new_candidate"  # no write possible (no read or write tool left to use)
WRITES_PER_TURN = 2  # the research prompt: "submit 1-2 targeted transforms"
GIVE_UP_AFTER = 3  # the research prompt: "If 3 consecutive patches are rejected ..."
# 50 Banking77 rows serialise to ~9.2k chars, under the 10k tool-result cap (a cut result
# is still read row by row).
ROW_LIMIT_MIN, ROW_LIMIT_DEFAULT, ROW_LIMIT_MAX = 12, 16, 50
MAX_INSTRUCTION_CHARS = 1800  # MiproOpenEnvProposerConfig's default; lowered on refusal
FALLBACK_MODULE = "system_prompt"  # only when neither the orientation nor a read names one
_DISTINCT_TRIES = 8
_QUERY_IN_PREVIEW = re.compile(r'"(?:query|question|text|input)":\s*"((?:[^"\\]|\\.)*)"')
_ROW_IN_RESULT = re.compile(r'\{"preview":\s*"((?:[^"\\]|\\.)*)",\s*"row_idx":\s*(\d+)\}')

Action = tuple[str, dict[str, Any]]


def is_synth_turn(request: ChatRequest) -> bool:
    """Synth's proposer shape: the add-instruction and finish tools, no forced named tool."""
    if isinstance(request.tool_choice, dict) or request.tool_choice not in (
        None,
        "required",
        "auto",
    ):
        return False
    names = {tool["function"]["name"] for tool in request.tools}
    return ADD in names and FINISH in names


def synth_turn(request: ChatRequest, seed: int) -> Choice:
    """The agent's next message: one or more native tool calls from the offered tools."""
    session = read_session(request)
    actions = next_actions(session, seed) or [_finish(session, FINISH_NOTHING)]
    encoded = [(name, json.dumps(args, ensure_ascii=False)) for name, args in actions]
    return Choice(
        tool_name=encoded[0][0], tool_arguments=encoded[0][1], extra_calls=tuple(encoded[1:])
    )


@dataclass
class Call:
    """One tool call of the history with its result (None: missing or not JSON)."""

    name: str
    arguments: dict[str, Any]
    result: dict[str, Any] | None = None
    raw: str = ""

    @property
    def status(self) -> str:
        return str((self.result or {}).get("status") or "")

    @property
    def reason(self) -> str:
        return str((self.result or {}).get("reason") or "")

    @property
    def failed(self) -> bool:
        """An error or refusal; a missing result counts as failed (nothing was learned)."""
        return self.result is None or self.status not in ("ok", "")

    @property
    def added(self) -> bool:
        return self.name == ADD and self.status == "ok" and (self.result or {}).get("added") is True


@dataclass
class Row:
    query: str
    intent: str | None  # None when the preview was cut before the label


@dataclass
class Session:
    """What the history shows the model: the offered tools, its calls and what they said."""

    offered: frozenset[str]
    calls: list[Call]
    module_id: str
    component_key: str
    row_count: int
    rows: dict[int, Row] = field(default_factory=dict)

    def tried(self, name: str, arguments: dict[str, Any] | None = None) -> bool:
        return any(
            c.name == name and (arguments is None or c.arguments == arguments) for c in self.calls
        )

    def adds(self) -> list[Call]:
        return [c for c in self.calls if c.name == ADD]

    def trailing_adds(self) -> list[Call]:
        """The writes since the last other call (what the session's consecutive rule counts)."""
        out: list[Call] = []
        for call in reversed(self.calls):
            if call.name != ADD:
                break
            out.append(call)
        return out[::-1]


def read_session(request: ChatRequest) -> Session:
    """The model's reading of the conversation: calls paired with their tool results."""
    orientation = _orientation(request)
    calls = _calls(request)
    module_id, component_key = _instruction_component(orientation, calls)
    counts = orientation.get("grounding_counts")
    row_count = counts.get("sampled_train_rows") if isinstance(counts, dict) else None
    session = Session(
        offered=frozenset(t["function"]["name"] for t in request.tools),
        calls=calls,
        module_id=module_id,
        component_key=component_key,
        row_count=row_count if isinstance(row_count, int) and row_count > 0 else 0,
    )
    session.rows = _rows(calls)
    return session


def _orientation(request: ChatRequest) -> dict[str, Any]:
    """The JSON summary of the first user message ("MIPRO proposer context ...\\n{...}")."""
    for message in request.messages:
        if message.role != "user":
            continue
        start = message.content.find("{")
        parsed = _json_object(message.content[start:]) if start >= 0 else None
        return parsed or {}
    return {}


def _calls(request: ChatRequest) -> list[Call]:
    """Assistant tool calls in order, each with the tool message that answers it."""
    calls: list[Call] = []
    by_id: dict[str, Call] = {}
    for message in request.messages:
        if message.role == "assistant":
            for tool_call in message.tool_calls:
                call = Call(tool_call.name, _json_object(tool_call.arguments) or {})
                calls.append(call)
                if tool_call.call_id:
                    by_id[tool_call.call_id] = call
        elif message.role in ("tool", "function"):
            call = by_id.pop(message.tool_call_id, None) or _unanswered(calls, message.name)
            if call is not None:
                call.raw = message.content
                call.result = _json_object(message.content)
    return calls


def _unanswered(calls: list[Call], name: str) -> Call | None:
    """The first call still without a result (by name when the tool message gives one)."""
    pending = [c for c in calls if c.result is None and not c.raw]
    named = [c for c in pending if c.name == name]
    return (named or pending or [None])[0]


def _json_object(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _instruction_component(orientation: dict[str, Any], calls: list[Call]) -> tuple[str, str]:
    """(module_id, component_key) of the first instruction component the model was shown."""
    sources = [orientation.get("components")]
    sources += [
        ((c.result or {}).get("state") or {}).get("components")
        for c in calls
        if c.name == READ_COMPONENTS
    ]
    for components in sources:
        for item in components if isinstance(components, list) else []:
            if isinstance(item, dict) and item.get("kind") == "instruction" and item.get(
                "module_id"
            ):
                module_id = str(item["module_id"])
                key = item.get("component_key") or f"module:{module_id}:instruction"
                return module_id, str(key)
    return "", ""


def _rows(calls: list[Call]) -> dict[int, Row]:
    """The train rows the reads showed, by row_idx; a full row replaces its preview."""
    rows: dict[int, Row] = {}
    for call in calls:
        if call.name == READ_ROWS and call.status in ("ok", ""):
            for idx, preview in _previews(call):
                rows.setdefault(idx, _row_from_preview(preview))
        elif call.name == READ_ROW and call.status == "ok":
            full = (call.result or {}).get("row")
            pair = pair_from_mapping(full) if isinstance(full, dict) else None
            idx = call.arguments.get("row_idx")
            if pair is not None and isinstance(idx, int):
                rows[idx] = Row(*pair)
    return {idx: rows[idx] for idx in sorted(rows)}


def _previews(call: Call) -> list[tuple[int, str]]:
    """(row_idx, preview) pairs; from the raw text when the result was cut mid-JSON."""
    items = (call.result or {}).get("rows")
    if isinstance(items, list):
        return [
            (item["row_idx"], item["preview"])
            for item in items
            if isinstance(item, dict)
            and isinstance(item.get("row_idx"), int)
            and isinstance(item.get("preview"), str)
        ]
    return [(int(i), _unescape(p)) for p, i in _ROW_IN_RESULT.findall(call.raw)]


def _row_from_preview(preview: str) -> Row:
    """A row from its JSON preview; when cut short, the query alone (label unknown)."""
    data = _json_object(preview)
    pair = pair_from_mapping(data) if data is not None else None
    if pair is not None:
        return Row(*pair)
    match = _QUERY_IN_PREVIEW.search(preview)
    return Row(_unescape(match.group(1)) if match else "", None)


def _unescape(text: str) -> str:
    try:
        value = json.loads(f'"{text}"')
    except ValueError:
        return text
    return value if isinstance(value, str) else text


def next_actions(session: Session, seed: int) -> list[Action]:
    """The next tool calls: finish, the reads the model still wants, or new candidates."""
    turns_left = _turns_left(session)
    if _limit_reached(session):
        return [_finish(session, FINISH_LIMIT)]
    if _gave_up(session):
        if READ_CANDIDATES in session.offered and session.calls[-1].name != READ_CANDIDATES:
            return [(READ_CANDIDATES, {"component_key": session.component_key})]
        return [_finish(session, FINISH_REJECTED)]
    if turns_left is not None and turns_left <= 1:
        writes = _writes(session, seed, 1) if not any(c.added for c in session.calls) else []
        return [*writes, _finish(session, FINISH_TURNS)]
    reads = _reads_wanted(session)
    if reads:
        return reads
    writes = _writes(session, seed, _batch_limit(session) - len(session.trailing_adds()))
    return writes or [_finish(session, FINISH_NOTHING)]


def _turns_left(session: Session) -> int | None:
    """Turns left including this one: the last result's turns_remaining_after_action."""
    for call in reversed(session.calls):
        value = (call.result or {}).get("turns_remaining_after_action")
        if isinstance(value, int):
            return value
    return None


def _limit_reached(session: Session) -> bool:
    return any(c.reason in LIMIT_REFUSALS for c in session.adds())


def _gave_up(session: Session) -> bool:
    """Three writes in a row rejected (refused, duplicate or failed), reads between allowed."""
    streak = 0
    for call in session.adds():
        streak = 0 if call.added else streak + 1
    return streak >= GIVE_UP_AFTER


def _batch_limit(session: Session) -> int:
    """Writes per turn: 1-2, or the consecutive-write limit a refusal reported."""
    limit = WRITES_PER_TURN
    for call in session.adds():
        if call.reason == "max_consecutive_patch_actions_reached":
            seen = (call.result or {}).get("consecutive_patch_actions")
            if isinstance(seen, int) and seen >= 1:
                limit = min(limit, seen)
    return limit


def _finish(session: Session, why: str) -> Action:
    """finish with a short fixed reason: the session reports it as its stop reason, and
    Synth's loop tallies stop reasons across rounds."""
    return (FINISH, {"reason": why})


def _reads_wanted(session: Session) -> list[Action]:
    """Reads still needed: the first batch, those a refusal asked for, one between writes."""
    first = _first_reads(session)
    if first:
        return first
    asked = _reads_asked_for(session)
    if asked is not None:
        return asked
    if session.trailing_adds() and len(session.trailing_adds()) >= _batch_limit(session):
        return _informative_reads(session, 1, frozenset())
    return []


def _first_reads(session: Session) -> list[Action]:
    """The current instruction text and the sampled rows, in one batch, each tried once."""
    key = session.component_key
    reads: list[Action] = []
    if not key and READ_COMPONENTS in session.offered and not session.tried(READ_COMPONENTS):
        return [(READ_COMPONENTS, {})]
    if key and _instruction_text(session) is None:
        for name in (READ_OPTIONS, READ_CANDIDATES):
            if name in session.offered and not session.tried(name):
                reads.append((name, {"component_key": key}))
                break
    if READ_ROWS in session.offered and not session.tried(READ_ROWS):
        reads.append((READ_ROWS, {"limit": _row_limit(session)}))
    return reads


def _row_limit(session: Session) -> int:
    wanted = session.row_count or ROW_LIMIT_DEFAULT
    return max(ROW_LIMIT_MIN, min(wanted, ROW_LIMIT_MAX))


def _reads_asked_for(session: Session) -> list[Action] | None:
    """After a write refused for want of reads: the reads it asked for (None: none owed)."""
    last_refusal = None
    for index, call in enumerate(session.calls):
        if call.name == ADD and call.reason in READ_REFUSALS:
            last_refusal = index
    if last_refusal is None:
        return None
    refusal = session.calls[last_refusal]
    reads_since = [c for c in session.calls[last_refusal + 1 :] if c.name != ADD]
    needed = _reads_needed(refusal)
    if len(reads_since) >= needed or any(c.name == ADD for c in session.calls[last_refusal + 1 :]):
        return None
    kinds = {
        "grounding_read_required_before_patch": GROUNDING_READS,
        "row_evidence_read_required_before_second_patch": EVIDENCE_READS,
        "runbook_patch_before_evidence": EVIDENCE_READS,
    }.get(refusal.reason, frozenset())
    if refusal.reason == "distinct_read_tools_required_before_patch":
        used = frozenset(c.name for c in session.calls if c.name != ADD)
        return _informative_reads(session, needed - len(reads_since), frozenset(), avoid=used)
    return _informative_reads(session, needed - len(reads_since), kinds)


def _reads_needed(refusal: Call) -> int:
    """How many reads the refusal's payload says are missing (at least one)."""
    result = refusal.result or {}
    if refusal.reason == "min_read_actions_before_patch_not_met":
        required, observed = result.get("required_reads"), result.get("observed_reads")
        if isinstance(required, int) and isinstance(observed, int):
            return max(1, required - observed)
    return 1


def _informative_reads(
    session: Session, count: int, kinds: frozenset[str], *, avoid: frozenset[str] = frozenset()
) -> list[Action]:
    """Up to `count` useful reads (of the given kinds, if any), never one that failed."""
    failed = [(c.name, c.arguments) for c in session.calls if c.failed and c.name != ADD]
    out: list[Action] = []
    for name, args in _read_menu(session):
        if len(out) >= count:
            break
        if name not in session.offered or (name, args) in failed or name in avoid:
            continue
        if (kinds and name not in kinds) or (name, args) in out:
            continue
        out.append((name, args))
    return out


def _read_menu(session: Session) -> list[Action]:
    """Reads in order of what they would teach: cut rows in full, what is registered, ..."""
    key = session.component_key
    cut = [idx for idx, row in session.rows.items() if row.intent is None]
    fetched = {c.arguments.get("row_idx") for c in session.calls if c.name == READ_ROW}
    menu: list[Action] = [(READ_ROW, {"row_idx": idx}) for idx in cut if idx not in fetched]
    if key:
        menu.append((READ_CANDIDATES, {"component_key": key}))
    menu.append((READ_SUMMARY, {}))
    if key:
        menu.append((READ_OPTIONS, {"component_key": key}))
    menu.append((READ_ROWS, {"limit": _row_limit(session)}))
    menu.append((READ_COMPONENTS, {}))
    menu.extend((READ_ROW, {"row_idx": idx}) for idx in session.rows if idx not in fetched)
    return menu


def _instruction_text(session: Session) -> str | None:
    """The first (baseline) instruction's full text, if a read showed it uncut."""
    for call in session.calls:
        result = call.result or {}
        if call.name == READ_CANDIDATES and call.status == "ok":
            for item in result.get("candidates") or []:
                if isinstance(item, dict) and isinstance(item.get("text"), str):
                    return item["text"]
        if call.name == READ_OPTIONS and call.status == "ok":
            options = (result.get("result") or {}).get("options") or []
            first = options[0] if options and isinstance(options[0], dict) else {}
            preview = first.get("preview")
            if isinstance(preview, str) and preview and not preview.endswith("..."):
                return preview
    return None


def _known_texts(session: Session) -> set[str]:
    """Instructions already registered or written: a new candidate must differ from them."""
    texts = {str(c.arguments.get("instruction_text", "")).strip() for c in session.adds()}
    for call in session.calls:
        for item in (call.result or {}).get("candidates") or []:
            if isinstance(item, dict) and isinstance(item.get("text"), str):
                texts.add(item["text"].strip())
    current = _instruction_text(session)
    if current:
        texts.add(current.strip())
    return texts


def _writes(session: Session, seed: int, count: int) -> list[Action]:
    """`count` (at least one) new candidates, each distinct from everything known."""
    known = _known_texts(session)
    current = _instruction_text(session) or DEFAULT_TASK
    pairs = [(row.query, row.intent) for row in session.rows.values() if row.intent]
    cap = _char_cap(session)
    index = len(session.adds())
    out: list[Action] = []
    for offset in range(max(1, count)):
        text = _distinct_proposal(current, pairs, seed, index + offset, known, cap)
        known.add(text)
        module_id = session.module_id or FALLBACK_MODULE
        out.append((ADD, {"module_id": module_id, "instruction_text": text}))
    return out


def _distinct_proposal(
    current: str,
    pairs: list[tuple[str, str]],
    seed: int,
    index: int,
    known: set[str],
    cap: int,
) -> str:
    """proposer.py's proposal for this candidate index, redrawn while it repeats one."""
    text = ""
    for attempt in range(_DISTINCT_TRIES):
        text = _fit(propose_instruction(current, pairs, [], _mix(seed, index, attempt)), cap)
        if text not in known:
            return text
    return text


def _char_cap(session: Session) -> int:
    """The instruction length limit: the default, lowered after a too-long refusal."""
    cap = MAX_INSTRUCTION_CHARS
    for call in session.adds():
        if "max_instruction_chars" in call.reason:
            cap = min(cap, int(len(str(call.arguments.get("instruction_text", ""))) * 0.6))
    return max(cap, 80)


def _fit(text: str, cap: int) -> str:
    """The text within `cap` characters, dropping hint lines from the end first."""
    lines = text.splitlines()
    while len("\n".join(lines)) > cap and len(lines) > 1:
        lines.pop()
        while lines and lines[-1].strip() in ("", HINTS_HEADER):
            lines.pop()
    return "\n".join(lines)[:cap].strip() or DEFAULT_TASK[:cap]


def _mix(seed: int, *parts: object) -> int:
    data = f"synth-proposer:{seed}:{':'.join(map(str, parts))}".encode()
    return int.from_bytes(hashlib.sha256(data).digest()[:8], "big")
