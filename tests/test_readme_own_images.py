"""The README's "Label your own images" runs as written: its commands, read from the README,
on a small generated folder of tagged images of mixed non-square sizes (no masks, no splits), in
a fresh folder, each through the installed ``wsss`` program (the pipeline on Prefect's temporary
server); labels and predictions come out at each image's own size."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from wsss.config import load_config
from wsss.data.synth import generate_synth_dataset
from wsss.data.manifest import read_manifest
from wsss.steps.recipe import DEMO_CONFIG

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    """The command lines of the first bash block under "## Label your own images", comments removed."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Label your own images", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line.split("  #", 1)[0].strip() for line in block.splitlines() if line.strip()]


@pytest.mark.slow
def test_readme_commands_label_a_folder_of_tagged_images(tmp_path):
    commands = readme_commands()
    assert [c.split()[1] for c in commands] == ["init", "data", "flow", "pseudo-label", "export", "predict"]
    synth = load_config(DEMO_CONFIG, ["data.synth.num_images=36", "data.synth.image_size=64",
                                      "data.synth.aspect=[0.6,1.6]"]).data.synth  # photos of mixed non-square sizes
    folder = generate_synth_dataset(tmp_path / "my_images", synth)
    shutil.rmtree(folder / "masks")
    shutil.rmtree(folder / "splits")  # a user's folder: images, tags.csv, classes.txt
    env = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_API")}
    env.update(PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
               PREFECT_HOME=str(tmp_path / "prefect"))
    for command in commands:
        done = subprocess.run(command, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, f"{command}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    config = load_config(tmp_path / "my_images.yaml")
    assert config.data.root == folder.resolve() and config.model.img_size == 64
    run = tmp_path / "runs" / "my_images"
    ids = [line.split(",")[0].rsplit(".", 1)[0] for line in (folder / "tags.csv").read_text().splitlines()[1:]]
    labelled = read_manifest(run / "pseudo_labels" / "manifest.jsonl")
    assert sorted(labelled) == sorted(ids) and all(e["status"] == "ok" for e in labelled.values())
    assert sorted(p.stem for p in (run / "pseudo_labels").glob("*.png")) == sorted(ids)
    sizes = {i: Image.open(folder / "images" / f"{i}.jpg").size for i in ids}
    assert len(set(sizes.values())) > 8 and any(w != h for w, h in sizes.values())
    for image_id, size in sizes.items():  # labels and predictions at each image's own size, never squared
        assert Image.open(run / "pseudo_labels" / f"{image_id}.png").size == size
        assert Image.open(run / "predictions" / f"{image_id}.png").size == size
    exported = json.loads((run / "labels.json").read_text())
    assert len(exported["images"]) == len(ids) and exported["annotations"]
    assert sorted(p.stem for p in (run / "predictions").glob("*.png")) == sorted(ids)
    for page in ("report.html", "review.html"):
        assert (run / page).stat().st_size > 1000
    report = json.loads((run / "report.json").read_text())
    assert report["pseudo_labels"]["ok"] == len(ids) - len((folder / "splits" / "val.txt").read_text().split())
