from dataclasses import dataclass, field

import pytest

from curation.config import ConfigError, keys, load, to_yaml


@dataclass
class Inner:
    enabled: bool = True
    threshold: float = 0.2
    name: str = "a"
    limit: int | None = None


@dataclass
class Outer:
    output: str = "out/x"
    sources: list[str] = field(default_factory=list)
    steps: int = 3
    clip: Inner = field(default_factory=Inner)


def test_defaults_then_overrides_are_typed():
    cfg = load(Outer, ["output=out/y", "clip.threshold=0.25", "clip.enabled=false", "steps=7", "clip.limit=5"])
    assert cfg.output == "out/y"
    assert cfg.clip.threshold == 0.25 and isinstance(cfg.clip.threshold, float)
    assert cfg.clip.enabled is False
    assert cfg.steps == 7
    assert cfg.clip.limit == 5
    assert load(Outer, ["clip.limit=null"]).clip.limit is None
    # the default instance is untouched
    assert Outer().clip.threshold == 0.2


def test_int_accepted_for_float_and_strings_kept_verbatim():
    cfg = load(Outer, ["clip.threshold=1", "output=007", "clip.name=true"])
    assert cfg.clip.threshold == 1.0
    assert cfg.output == "007"
    assert cfg.clip.name == "true"


def test_scientific_notation_and_numeric_lists():
    @dataclass
    class Opt:
        lr: float = 0.1
        weights: list[float] = field(default_factory=list)

    assert load(Opt, ["lr=1e-3"]).lr == 0.001
    assert load(Opt, ["weights=1,0.5"]).weights == [1.0, 0.5]
    with pytest.raises(ConfigError, match="lr expects a number"):
        load(Opt, ["lr=fast"])


def test_lists_from_commas_or_yaml():
    assert load(Outer, ["sources=a,b/c, d"]).sources == ["a", "b/c", "d"]
    assert load(Outer, ["sources=[x, y]"]).sources == ["x", "y"]
    assert load(Outer, ["sources=name=/data/x"]).sources == ["name=/data/x"]


def test_unknown_key_names_valid_keys_and_suggests():
    with pytest.raises(ConfigError) as err:
        load(Outer, ["clip.treshold=0.3"])
    msg = str(err.value)
    assert "clip.treshold" in msg and "clip.threshold" in msg and "Did you mean" in msg
    assert "clip.enabled" in msg
    with pytest.raises(ConfigError, match="Valid keys: output, sources, steps, clip.enabled"):
        load(Outer, ["nope=1"])


def test_wrong_type_is_a_clear_error():
    with pytest.raises(ConfigError, match="clip.threshold expects a number, got 'abc'"):
        load(Outer, ["clip.threshold=abc"])
    with pytest.raises(ConfigError, match="steps expects an integer"):
        load(Outer, ["steps=2.5"])
    with pytest.raises(ConfigError, match="clip.enabled expects true or false"):
        load(Outer, ["clip.enabled=maybe"])
    with pytest.raises(ConfigError, match="is a group"):
        load(Outer, ["clip=3"])
    with pytest.raises(ConfigError, match="expected key=value"):
        load(Outer, ["oops"])


def test_yaml_file_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("output: out/from_yaml\nclip:\n  threshold: 0.5\n  name: b\n")
    cfg = load(Outer, ["--config", str(path), "clip.name=c"])
    assert (cfg.output, cfg.clip.threshold, cfg.clip.name) == ("out/from_yaml", 0.5, "c")
    path.write_text("clip:\n  thresold: 0.5\n")
    with pytest.raises(ConfigError, match=f"unknown key 'clip.thresold' in {path}"):
        load(Outer, ["--config", str(path)])


def test_keys_and_yaml_dump_round_trip(tmp_path):
    assert keys(Outer()) == ["output", "sources", "steps", "clip.enabled", "clip.threshold", "clip.name", "clip.limit"]
    cfg = load(Outer, ["clip.threshold=0.7", "sources=a,b"])
    path = tmp_path / "dump.yaml"
    path.write_text(to_yaml(cfg))
    assert load(Outer, ["--config", str(path)]) == cfg


def test_every_build_pretrain_step_is_switched_off_by_its_own_key():
    from jobs.build_pretrain import BuildPretrainConfig, pipeline

    names = [step.name for step in pipeline(BuildPretrainConfig())]
    assert names == ["validate", "exact_dedup", "near_dedup", "image_dedup", "decontam", "clip"]
    off_by_default = {s.name for s in pipeline(BuildPretrainConfig()) if not s.enabled}
    assert off_by_default == {"decontam"}  # it runs when benchmarks are listed
    for name in names:
        cfg = load(BuildPretrainConfig, [f"{name}.enabled=false"])
        assert {s.name for s in pipeline(cfg) if not s.enabled} == off_by_default | {name}


def _config_roots():
    """Every configuration a user types keys into: the jobs', the training stage's, the merge's."""
    from jobs.build_cot import BuildCotConfig
    from jobs.build_pretrain import BuildPretrainConfig
    from jobs.dedup import DedupJobConfig
    from jobs.extract_ocr import ExtractJobConfig
    from jobs.render_ocr import RenderJobConfig
    from training.merge import MergeConfig
    from training.stages import StageConfig

    return [BuildPretrainConfig, BuildCotConfig, DedupJobConfig, ExtractJobConfig, RenderJobConfig, StageConfig, MergeConfig]


def _choice_fields(cls, prefix=""):
    """(dotted key, where the choice is: 'value' | 'item' | 'key', the valid values) of every
    Literal in a configuration tree."""
    import dataclasses
    import typing

    out = []
    instance = cls()
    for f in dataclasses.fields(cls):
        hint = typing.get_type_hints(cls)[f.name]
        value = getattr(instance, f.name)
        if dataclasses.is_dataclass(value):
            out += _choice_fields(type(value), f"{prefix}{f.name}.")
            continue
        candidates = [(hint, "value")]
        origin, args = typing.get_origin(hint), typing.get_args(hint)
        if origin in (typing.Union, getattr(__import__("types"), "UnionType")):
            candidates = [(a, "value") for a in args]
        elif origin is list and args:
            candidates = [(args[0], "item")]
        elif origin is dict and args:
            candidates = [(args[0], "key")]
        for inner, where in candidates:
            if typing.get_origin(inner) is typing.Literal:
                out.append((prefix + f.name, where, typing.get_args(inner)))
    return out


def test_every_choice_rejects_a_typo_at_parse_time_naming_the_valid_values():
    found = 0
    for root in _config_roots():
        for key, where, valid in _choice_fields(root):
            typo = f"{valid[0]}x"
            raw = {"value": typo, "item": f"[{typo}]", "key": f"{{{typo}: 1}}"}[where]
            with pytest.raises(ConfigError) as caught:
                load(root, [f"{key}={raw}"])
            message = str(caught.value)
            assert key in message and all(str(v) in message for v in valid), (root.__name__, key, message)
            # and every valid value is taken
            for value in valid:
                raw = {"value": value, "item": f"[{value}]", "key": f"{{{value}: 1}}"}[where]
                load(root, [f"{key}={raw}"])
            found += 1
    # the choices this test must see (a Literal turned back into str would drop out of the count)
    keys_seen = {key for root in _config_roots() for key, _, _ in _choice_fields(root)}
    for key in ("near_dedup.verify", "near_dedup.script", "clip.mode", "clip.precision", "writer.compression",
                "engine.name", "layout.weights", "task", "precision", "schedule.name", "folders", "sandbox.mode",
                "teacher.client.backend", "teacher.keep"):
        assert key in keys_seen, key
    assert found >= 15
