"""The task taxonomy as data: task types with paths `L1~L2~L3`, English and Chinese names and a
one-line description, stored as versioned JSONL (a header line, then one type per line, sorted).

    python -m taskgalaxy.taxonomy stats  [taxonomy=FILE]
    python -m taskgalaxy.taxonomy export [taxonomy=FILE] output=FILE.parquet|FILE.jsonl
    python -m taskgalaxy.taxonomy expand [taxonomy=FILE] output=FILE client.base_urls=[URL] client.model=NAME \
        [parents=PATH,...] [per_parent=8] [threshold=0.82]

The shipped seed (taskgalaxy/data/taxonomy.jsonl) is hand-written: 13 first-level families, 4
second-level types each, 6 third-level each. `expand` asks a model (the model client, JSON
schema) for new children of each parent, level by level, with the parent and its existing
children in the prompt; names are normalised (Unicode NFKC, case, whitespace, and every tilde
look-alike: `~` U+007E, `∼` U+223C, `～` U+FF5E, `˜` U+02DC, since a name must never split a
path); a candidate that equals a sibling after normalisation, or whose text embedding is within
`threshold` cosine of a sibling's (or of a candidate accepted before it), is merged into it and
recorded as an alias; every accepted type records the model and prompt version that added it.
"""

from __future__ import annotations

import json
import re
import sys
import unicodedata
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from synthesis.model_client.config import ClientConfig

SEED = Path(__file__).resolve().parent / "data" / "taxonomy.jsonl"
SEP = "~"
TILDES = "~\u223c\uff5e\u02dc\u2053\u301c"  # ~ ∼ ～ ˜ ⁓ 〜
_TILDE_RE = re.compile(f"[{TILDES}]")
PROMPT_VERSION = "expand-v1"


@dataclass
class TaskType:
    path: str
    name_en: str
    name_zh: str = ""
    description: str = ""
    level: int = 0
    origin: str = "seed"  # seed, or the model that proposed it
    added_in: int = 1  # taxonomy version
    prompt_version: str = ""
    aliases: list[str] = field(default_factory=list)  # merged near-duplicates

    def __post_init__(self):
        self.level = self.level or len(split_path(self.path))

    @property
    def parent(self) -> str:
        return SEP.join(split_path(self.path)[:-1])

    def text(self) -> str:
        """What embeddings see: the path's names, most specific last, and the description."""
        return f"{' > '.join(split_path(self.path))}: {self.description}".strip()


def normalise_name(name: str) -> str:
    """NFKC, lower case, tilde look-alikes as spaces, whitespace collapsed."""
    text = unicodedata.normalize("NFKC", str(name))
    text = _TILDE_RE.sub(" ", text).lower()
    return " ".join(text.split())


def split_path(path: str) -> list[str]:
    """A path's names; any tilde look-alike separates (the TaskGalaxy code split on one of two)."""
    return [" ".join(part.split()) for part in _TILDE_RE.split(unicodedata.normalize("NFKC", path)) if part.strip()]


def join_path(*names: str) -> str:
    return SEP.join(names)


class Taxonomy:
    def __init__(self, types: list[TaskType], version: int = 1):
        self.version = version
        self.types: dict[str, TaskType] = {}
        for t in types:
            if t.path in self.types:
                raise ValueError(f"taxonomy: {t.path!r} appears twice")
            self.types[t.path] = t
        for t in self.types.values():
            if t.level > 1 and t.parent not in self.types:
                raise ValueError(f"taxonomy: {t.path!r} has no parent {t.parent!r}")

    @classmethod
    def load(cls, path: str | Path = SEED) -> "Taxonomy":
        lines = Path(path).read_text(encoding="utf-8").splitlines()
        header = json.loads(lines[0])
        if header.get("taxonomy") != "keyeforge-taskgalaxy":
            raise ValueError(f"{path}: not a keyeforge taxonomy file (its first line is the header)")
        fields = set(TaskType.__dataclass_fields__)
        types = [TaskType(**{k: v for k, v in json.loads(line).items() if k in fields}) for line in lines[1:] if line.strip()]
        return cls(types, int(header.get("version", 1)))

    def save(self, path: str | Path, note: str = "") -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        header = {"taxonomy": "keyeforge-taskgalaxy", "version": self.version, "separator": SEP, "note": note}
        with open(path, "w", encoding="utf-8") as f:
            f.write(json.dumps(header, ensure_ascii=False) + "\n")
            for t in sorted(self.types.values(), key=lambda t: t.path):
                record = {k: v for k, v in asdict(t).items() if v not in ("", [])}
                f.write(json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n")
        return path

    def children(self, parent: str) -> list[TaskType]:
        return sorted((t for t in self.types.values() if t.level > 1 and t.parent == parent), key=lambda t: t.path)

    def roots(self) -> list[TaskType]:
        return sorted((t for t in self.types.values() if t.level == 1), key=lambda t: t.path)

    def leaves(self) -> list[TaskType]:
        parents = {t.parent for t in self.types.values() if t.level > 1}
        return sorted((t for t in self.types.values() if t.path not in parents), key=lambda t: t.path)

    def stats(self) -> dict:
        levels = Counter(t.level for t in self.types.values())
        leaves = self.leaves()
        return {"version": self.version, "types": len(self.types), "per_level": dict(sorted(levels.items())),
                "leaves": len(leaves), "origins": dict(Counter(t.origin for t in self.types.values())),
                "per_l1": {r.path: sum(1 for t in leaves if t.path.startswith(r.path + SEP)) for r in self.roots()}}


# --- merging near-duplicates --------------------------------------------------------------------------


@dataclass
class MergeResult:
    accepted: list[dict]  # candidates kept, names normalised
    merged: list[tuple[str, str, float]]  # (candidate name, the sibling it merged into, cosine)


def merge_candidates(siblings: list[str], candidates: list[dict], embedder, threshold: float) -> MergeResult:
    """Candidates (dicts with name_en, ...) against existing sibling names and each other, in order."""
    kept_names = [normalise_name(s) for s in siblings]
    kept_vectors = list(embedder.encode(kept_names)) if kept_names else []
    accepted, merged = [], []
    names = [normalise_name(c.get("name_en", "")) for c in candidates]
    vectors = embedder.encode([n for n in names if n]) if any(names) else []
    vector_of = iter(vectors)
    for candidate, name in zip(candidates, names):
        if not name:
            continue
        vector = next(vector_of)
        if name in kept_names:
            merged.append((candidate.get("name_en", ""), kept_names[kept_names.index(name)], 1.0))
            continue
        scores = [float(vector @ v) for v in kept_vectors]
        best = max(range(len(scores)), key=scores.__getitem__) if scores else None
        if best is not None and scores[best] >= threshold:
            merged.append((candidate.get("name_en", ""), kept_names[best], round(scores[best], 4)))
            continue
        accepted.append({**candidate, "name_en": name})
        kept_names.append(name)
        kept_vectors.append(vector)
    return MergeResult(accepted, merged)


# --- expansion through the model client ---------------------------------------------------------------

EXPAND_SCHEMA = {
    "type": "object",
    "properties": {"children": {"type": "array", "items": {
        "type": "object",
        "properties": {"name_en": {"type": "string"}, "name_zh": {"type": "string"}, "description": {"type": "string"}},
        "required": ["name_en", "name_zh", "description"], "additionalProperties": False}}},
    "required": ["children"], "additionalProperties": False,
}


def expand_prompt(taxonomy: Taxonomy, parent: TaskType, per_parent: int) -> str:
    existing = "\n".join(f"- {c.name_en} ({c.name_zh}): {c.description}" for c in taxonomy.children(parent.path)) or "- (none yet)"
    return (
        "You extend a taxonomy of vision-language tasks (tasks a model does with an image or video and a question).\n"
        f"Parent task type: {' > '.join(split_path(parent.path))} — {parent.description}\n"
        f"Its existing sub-types:\n{existing}\n"
        f"Propose up to {per_parent} NEW sub-types of the parent that are distinct from the existing ones and from "
        "each other. Each has an English name (a few words, no '~'), a Chinese name and a one-line description. "
        'Answer as JSON: {"children": [{"name_en": ..., "name_zh": ..., "description": ...}]}'
    )


@dataclass
class ExpandReport:
    asked: int = 0
    failed: dict = field(default_factory=dict)  # parent -> error code
    added: list[str] = field(default_factory=list)
    merged: list[list] = field(default_factory=list)  # [parent, candidate, merged into, cosine]


def expand(taxonomy: Taxonomy, parents: list[str], client_cfg, per_parent: int = 8, threshold: float = 0.82,
           embedder=None) -> ExpandReport:
    """Add children under each parent (in the order given), one model call per parent."""
    from synthesis.model_client import client_for
    from synthesis.model_client.records import ChatRequest

    from taskgalaxy.embed import text_embedder

    embedder = embedder or text_embedder()
    cfg = client_cfg if client_cfg.response_schema else _with_schema(client_cfg)
    client = client_for(cfg)
    report = ExpandReport()
    version = taxonomy.version + 1
    for parent_path in parents:
        parent = taxonomy.types.get(parent_path)
        if parent is None:
            raise ValueError(f"expand: no task type {parent_path!r} in the taxonomy")
        request = ChatRequest(f"expand:{parent_path}", [{"role": "user", "content": expand_prompt(taxonomy, parent, per_parent)}])
        [done] = client.chat([request])
        report.asked += 1
        if not done.ok:
            report.failed[parent_path] = done.error
            continue
        candidates = [c for c in (done.parsed[0] or {}).get("children", [])][:per_parent]
        siblings = [c.name_en for c in taxonomy.children(parent_path)]
        result = merge_candidates(siblings, candidates, embedder, threshold)
        for name, into, score in result.merged:
            report.merged.append([parent_path, name, into, score])
            target = next((c for c in taxonomy.children(parent_path) if normalise_name(c.name_en) == into), None)
            if target is not None and normalise_name(name) != into and name not in target.aliases:
                target.aliases.append(name)
        for c in result.accepted:
            path = join_path(parent_path, c["name_en"])
            taxonomy.types[path] = TaskType(path, c["name_en"], " ".join(str(c.get("name_zh", "")).split()),
                                            " ".join(str(c.get("description", "")).split()), origin=cfg.model,
                                            added_in=version, prompt_version=PROMPT_VERSION)
            report.added.append(path)
    if report.added:
        taxonomy.version = version
    return report


def _with_schema(client_cfg):
    import dataclasses

    return dataclasses.replace(client_cfg, response_schema=EXPAND_SCHEMA, schema_name="taxonomy_children")


# --- command line --------------------------------------------------------------------------------------


@dataclass
class TaxonomyCommand:
    taxonomy: str = str(SEED)
    output: str = ""
    parents: list[str] = field(default_factory=list)  # expand: parents to extend (empty: every level-2 type)
    per_parent: int = 8
    threshold: float = 0.82  # cosine of all-MiniLM-L6-v2 name embeddings at which a candidate merges
    client: ClientConfig = field(default_factory=ClientConfig)


def main(argv: list[str]) -> None:
    from curation import config as configuration

    if not argv or argv[0] not in ("stats", "export", "expand"):
        raise SystemExit("usage: python -m taskgalaxy.taxonomy stats|export|expand [key=value ...]")
    action, cfg = argv[0], configuration.job_config(TaxonomyCommand, argv[1:], "taskgalaxy.taxonomy")
    if cfg is None:
        return
    taxonomy = Taxonomy.load(cfg.taxonomy)
    if action == "stats":
        print(json.dumps(taxonomy.stats(), indent=1, ensure_ascii=False))
    elif action == "export":
        if not cfg.output:
            raise SystemExit("export: output=FILE.parquet or FILE.jsonl is required")
        if cfg.output.endswith(".parquet"):
            import pyarrow as pa
            import pyarrow.parquet as pq

            rows = [asdict(t) for t in sorted(taxonomy.types.values(), key=lambda t: t.path)]
            pq.write_table(pa.Table.from_pylist(rows), cfg.output)
        else:
            taxonomy.save(cfg.output)
        print(cfg.output)
    else:
        if not cfg.output:
            raise SystemExit("expand: output=FILE is required (the seed is never overwritten)")
        parents = cfg.parents or [t.path for t in taxonomy.types.values() if t.level == 2]
        report = expand(taxonomy, sorted(parents), cfg.client, cfg.per_parent, cfg.threshold)
        taxonomy.save(cfg.output, note=f"expanded from {cfg.taxonomy} with {cfg.client.model}")
        print(json.dumps(asdict(report), indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main(sys.argv[1:])
