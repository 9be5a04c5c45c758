import json
import subprocess
import sys
from pathlib import Path

from curation.writer import WriterConfig, write_output
from tests.curation.test_writer import marked

ROOT = Path(__file__).resolve().parents[2]


def test_card_rebuilds_from_any_output_folder(spark, tmp_path):
    out = tmp_path / "o"
    write_output(marked(spark, 2), str(out), ["first", "second"], {"clip": {"enabled": True, "model": "tiny-random"}},
                 WriterConfig(shard_bytes=8000), card=False)
    assert not (out / "card").exists()
    result = subprocess.run([sys.executable, "-m", "curation.card", str(out)], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    text = (out / "card" / "README.md").read_text()
    manifest = json.loads((out / "_manifest.json").read_text())
    assert f"{manifest['rows']:,} rows in {len(manifest['shards'])} shards" in text
    assert "| first | 120 | 108 | 12 | tens: 12 |" in text
    assert "| second | tens | " not in text and "| second | fours | 24 |" in text
    assert "**The CLIP scores in this dataset come from `tiny-random`" in text
    html = (out / "card" / "index.html").read_text()
    assert "<strong>The CLIP scores" in html and "<td>fours</td>" in html
