"""The taxonomy: the shipped seed, names and paths (both tildes), and expansion through the model
client against a scripted OpenAI-compatible server: planted near-duplicates merged, distinct
siblings kept, every addition recorded with its model and prompt version."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "synthesis"))  # the scripted server helper

from model_client_helpers import ScriptedServer  # noqa: E402

from synthesis.model_client.config import ClientConfig  # noqa: E402
from taskgalaxy.taxonomy import Taxonomy, expand, main, normalise_name, split_path  # noqa: E402


def test_the_seed_covers_every_family_with_bilingual_names():
    taxonomy = Taxonomy.load()
    leaves = taxonomy.leaves()
    assert len(leaves) >= 300 and all(t.level == 3 for t in leaves)
    families = {t.path for t in taxonomy.roots()}
    for needed in ("perception and recognition", "ocr and documents", "counting", "spatial relations",
                   "charts and tables", "mathematics", "science diagrams", "video and temporal",
                   "grounding and localisation", "reasoning", "gui and screens", "safety"):
        assert needed in families
    for t in taxonomy.types.values():
        assert t.name_zh and t.description and split_path(t.path)[-1] == t.name_en
        assert normalise_name(t.name_en) == t.name_en  # stored names are already normal


def test_names_and_paths_with_both_tildes_and_odd_spacing():
    assert split_path("counting~object counting\u223ccount people") == ["counting", "object counting", "count people"]
    assert split_path("a \uff5e b ~c") == ["a", "b", "c"]
    assert normalise_name("  Count\u00a0People ") == "count people"
    assert normalise_name("count\u223canimals") == normalise_name("count~animals") == "count animals"


def test_expansion_merges_near_duplicates_and_keeps_distinct_siblings(tmp_path):
    parent = "counting~object counting"
    children = [
        {"name_en": "Count People", "name_zh": "人数", "description": "case variant of an existing type"},
        {"name_en": "count\u223canimals", "name_zh": "动物", "description": "tilde variant (U+223C)"},
        {"name_en": "count~vehicles", "name_zh": "车辆", "description": "tilde variant (U+007E)"},
        {"name_en": "counting persons", "name_zh": "数人", "description": "a synonym"},
        {"name_en": "count coins", "name_zh": "数硬币", "description": "count the coins in the image"},
        {"name_en": "Count  Coins", "name_zh": "数硬币", "description": "the same candidate twice in one reply"},
        {"name_en": "count stairs", "name_zh": "数台阶", "description": "count the steps of a staircase"},
        {"name_en": "count books on a shelf", "name_zh": "数书", "description": "count books standing on a shelf"},
    ]
    scripts = {"expand": [("reply", ["Sure! Here are some ideas: coins, stairs."]), ("reply", [json.dumps({"children": children})])]}
    taxonomy = Taxonomy.load()
    before = {c.path for c in taxonomy.children(parent)}
    with ScriptedServer(scripts) as server:
        # the script name reaches the server in the prompt: the parent's description carries it
        taxonomy.types[parent].description += " script:expand"
        cfg = ClientConfig(base_urls=[server.url], model="tiny-teacher", max_retries=0, backoff_s=0.01)
        report = expand(taxonomy, [parent], cfg, per_parent=10, threshold=0.82)
        assert len(server.bodies("expand")) == 2  # the prose reply was re-asked, the JSON one taken
    added = {p.split("~")[-1] for p in report.added}
    assert added == {"count coins", "count stairs", "count books on a shelf"}
    merged = {(name, into) for _, name, into, _ in report.merged}
    assert merged == {("Count People", "count people"), ("count\u223canimals", "count animals"),
                      ("count~vehicles", "count vehicles"), ("counting persons", "count people"),
                      ("Count  Coins", "count coins")}
    assert {c.path for c in taxonomy.children(parent)} == before | set(report.added)
    new = taxonomy.types[f"{parent}~count coins"]
    assert (new.origin, new.prompt_version, new.added_in) == ("tiny-teacher", "expand-v1", 2)
    assert "counting persons" in taxonomy.types[f"{parent}~count people"].aliases
    saved = Taxonomy.load(taxonomy.save(tmp_path / "t.jsonl"))
    assert saved.version == 2 and set(saved.types) == set(taxonomy.types)


def test_a_failing_model_leaves_the_taxonomy_unchanged(tmp_path, capsys):
    scripts = {"down": [("status", 503)]}
    taxonomy = Taxonomy.load()
    parent = "safety~privacy"
    taxonomy.types[parent].description += " script:down"
    with ScriptedServer(scripts) as server:
        report = expand(taxonomy, [parent], ClientConfig(base_urls=[server.url], model="m", max_retries=1, backoff_s=0.01))
    assert report.failed == {parent: "http_503_exhausted"} and report.added == [] and taxonomy.version == 1
    main(["stats"])
    assert json.loads(capsys.readouterr().out)["leaves"] == len(Taxonomy.load().leaves())
    main(["export", f"output={tmp_path / 'types.parquet'}"])
    import pyarrow.parquet as pq

    assert pq.read_table(tmp_path / "types.parquet").num_rows == len(Taxonomy.load().types)
