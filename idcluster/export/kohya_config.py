"""How kohya-ss sd-scripts is told to read a training set: dataset_config.toml and the command-line flags.

What sd-scripts checks (library/config_util.py, library/train_util.py), and what
is written for it:
- bucketing: `min_bucket_reso <= resolution <= max_bucket_reso`, else an
  AssertionError before training (sd-scripts' defaults 256/1024 refused
  export.target_size 200 and 1280): bounds are written, multiples of
  `bucket_reso_steps`, that hold the resolution;
- captions: a subset reads `<image stem><caption_extension>`, and its default
  extension is `.caption`: the plain `--train_data_dir` way ignores `.txt`
  captions unless told `--caption_extension=.txt` (printed after every export);
- keep_tokens counts comma-separated tokens of the caption as written: it is
  written per folder, counting the prefix and the name (a name with a comma is
  two tokens);
- `image_dir` is opened as written, relative paths from the trainer's working
  folder: absolute paths are written, for the folder's place at export time;
  `retarget` rewrites them after the folder moved (the plan to regenerate the
  file is kept in the export's marker).
"""

from __future__ import annotations

import json
import shlex
from collections import Counter
from pathlib import Path

DATASET_CONFIG = "dataset_config.toml"
DEFAULT_RESOLUTION = 512  # sd-scripts' usual resolution when sizes are kept
BUCKET_STEPS = 64  # sd-scripts' default bucket_reso_steps
BUCKET_MIN, BUCKET_MAX = 256, 1024  # sd-scripts' defaults, widened where the resolution needs it


def bucket_bounds(resolution: int) -> dict[str, int]:
    """min_bucket_reso, max_bucket_reso and bucket_reso_steps that sd-scripts accepts for this resolution."""
    steps = BUCKET_STEPS if resolution >= BUCKET_STEPS else 8  # tiny training images: SD's latent grid is 8 px
    low = max(steps, min(BUCKET_MIN, resolution // steps * steps))
    high = max(BUCKET_MAX, -(-resolution // steps) * steps)
    return {"min_bucket_reso": low, "max_bucket_reso": high, "bucket_reso_steps": steps}


def keep_tokens(caption_start: str) -> int:
    """Tokens sd-scripts keeps in front when it shuffles: those of the caption's fixed start (prefix and
    name), split at commas as sd-scripts splits them."""
    return len(caption_start.split(",")) if caption_start else 0


def plan(resolution: int, bucket: bool, caption_extension: str, subsets: list[dict]) -> dict:
    """What dataset_config.toml says, without where the folder is: subsets hold their folder relative to
    the training set ({"folder", "num_repeats", "class_tokens", "keep_tokens", "is_reg"})."""
    dataset = {"resolution": resolution, "batch_size": 1, "enable_bucket": bucket}
    if bucket:
        dataset.update(bucket_bounds(resolution))
    kept = [s["keep_tokens"] for s in subsets if not s.get("is_reg")]
    # shuffle_caption is left to the command line (sd-scripts' default: off); keep_tokens protects the
    # prefix and the name when it is on: the most common count here, each folder's own below.
    general = {"caption_extension": caption_extension,
               "keep_tokens": Counter(kept).most_common(1)[0][0] if kept else 0}
    return {"general": general, "dataset": dataset, "subsets": subsets}


def _value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    return json.dumps(str(v), ensure_ascii=False)  # a JSON string is a valid TOML basic string


def toml_text(dest: Path, p: dict) -> str:
    """dataset_config.toml for the training set at `dest` (image_dir paths absolute)."""
    dest = Path(dest).resolve()
    lines = ["# written by idcluster (export.format=kohya) for kohya-ss sd-scripts: --dataset_config "
             f"{dest / DATASET_CONFIG}",
             f"# image_dir paths are absolute, for this folder at {dest}. Moved it? Run",
             "#   idcluster export --retarget NEW_FOLDER",
             f"# or replace {dest} with the new place in this file.",
             "[general]", *(f"{k} = {_value(v)}" for k, v in p["general"].items()), "",
             "[[datasets]]", *(f"{k} = {_value(v)}" for k, v in p["dataset"].items()), ""]
    for s in p["subsets"]:
        lines += ["  [[datasets.subsets]]", f"  image_dir = {_value(dest / s['folder'])}"]
        lines += [f"  {k} = {_value(v)}" for k, v in s.items() if k != "folder"]
        lines.append("")
    return "\n".join(lines)


def train_flags(dest: Path, p: dict, reg_root: str | None) -> str:
    """The sd-scripts flags that read this training set the classic way (--train_data_dir; reg_root: the
    folder holding the `<repeats>_<class>` regularisation folders), which needs no dataset_config.toml
    and no fixed place (shell-quoted)."""
    dest = Path(dest).resolve()
    flags = [f"--train_data_dir={dest}", f"--caption_extension={p['general']['caption_extension']}"]
    kept = {s["keep_tokens"] for s in p["subsets"] if not s.get("is_reg")}
    if len(kept) == 1:
        flags.append(f"--keep_tokens={kept.pop()}")
    if reg_root:
        flags.append(f"--reg_data_dir={dest / reg_root}")
    return " ".join(shlex.quote(f) for f in flags)
