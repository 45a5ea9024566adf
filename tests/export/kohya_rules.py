"""What kohya-ss sd-scripts does with a training folder, restated from its source for the tests.

sd-scripts is not on PyPI (and needs torch), so the conditions it checks before
training are restated here from its code (library/config_util.py:
ConfigSanitizer's schema, BlueprintGenerator's fallbacks subset > dataset >
general > command line > defaults, generate_dreambooth_subsets_config_by_subdirs;
library/train_util.py: DreamBoothDataset's load_dreambooth_dir and read_caption,
glob_images, BaseDataset.adjust_min_max_bucket_reso_by_steps and
process_caption's keep_tokens / shuffle split). Each function names the code it
follows; where sd-scripts logs a warning and goes on, these do the same (the
warning is recorded), where it raises, these raise the same exception.
"""

from __future__ import annotations

import glob
import os
import random
import tomllib
from pathlib import Path

IMAGE_EXTENSIONS = [".png", ".jpg", ".jpeg", ".webp", ".bmp"]
IMAGE_EXTENSIONS += [e.upper() for e in IMAGE_EXTENSIONS]

# ConfigSanitizer: the keys a DreamBooth-style dataset_config may hold, and their types.
_SUBSET_ASCENDABLE = {"color_aug": bool, "flip_aug": bool, "num_repeats": int, "random_crop": bool,
                      "shuffle_caption": bool, "keep_tokens": int, "keep_tokens_separator": str,
                      "secondary_separator": str, "enable_wildcard": bool, "token_warmup_min": int,
                      "token_warmup_step": (float, int), "caption_prefix": str, "caption_suffix": str,
                      "face_crop_aug_range": list}
_DB_SUBSET_ASCENDABLE = {"caption_extension": str, "class_tokens": str, "cache_info": bool}
_DB_SUBSET_DISTINCT = {"image_dir": str, "is_reg": bool}
_DATASET_ASCENDABLE = {"batch_size": int, "bucket_no_upscale": bool, "bucket_reso_steps": int, "enable_bucket": bool,
                       "max_bucket_reso": int, "min_bucket_reso": int, "resolution": (int, list),
                       "network_multiplier": float}
GENERAL = {**_DATASET_ASCENDABLE, **_SUBSET_ASCENDABLE, **_DB_SUBSET_ASCENDABLE}
DATASET = {**GENERAL}
SUBSET = {**_SUBSET_ASCENDABLE, **_DB_SUBSET_DISTINCT, **_DB_SUBSET_ASCENDABLE}

# DreamBoothSubsetParams / DreamBoothDatasetParams defaults.
SUBSET_DEFAULTS = {"image_dir": None, "num_repeats": 1, "shuffle_caption": False, "caption_separator": ",",
                   "keep_tokens": 0, "is_reg": False, "class_tokens": None, "caption_extension": ".caption"}
DATASET_DEFAULTS = {"batch_size": 1, "enable_bucket": False, "min_bucket_reso": 256, "max_bucket_reso": 1024,
                    "bucket_reso_steps": 64, "resolution": None}


class Invalid(ValueError):
    """voluptuous.MultipleInvalid: sd-scripts stops with "Invalid user config"."""


def _check(section: dict, schema: dict, where: str) -> None:
    for key, value in section.items():
        if key not in schema:
            raise Invalid(f"extra keys not allowed @ {where}['{key}']")
        if not isinstance(value, schema[key]):
            raise Invalid(f"expected {schema[key]} @ {where}['{key}'], got {value!r}")


def sanitize(config: dict) -> dict:
    """ConfigSanitizer.sanitize_user_config for DreamBooth datasets."""
    for key in config:
        if key not in ("general", "datasets"):
            raise Invalid(f"extra keys not allowed @ data['{key}']")
    _check(config.get("general", {}), GENERAL, "general")
    for i, ds in enumerate(config.get("datasets", [])):
        _check({k: v for k, v in ds.items() if k != "subsets"}, DATASET, f"datasets[{i}]")
        for j, sub in enumerate(ds.get("subsets", [])):
            if "image_dir" not in sub:
                raise Invalid(f"required key not provided @ datasets[{i}].subsets[{j}]['image_dir']")
            _check(sub, SUBSET, f"datasets[{i}].subsets[{j}]")
    return config


def _fallback(key: str, *sources: dict, default=None):
    """BlueprintGenerator.search_value: the first source holding a non-None value."""
    for s in sources:
        if s.get(key) is not None:
            return s[key]
    return default


def adjust_buckets(resolution: tuple[int, int], low: int, high: int, steps: int) -> tuple[int, int]:
    """BaseDataset.adjust_min_max_bucket_reso_by_steps."""
    if low % steps != 0:
        low = low - low % steps
    if high % steps != 0:
        high = high + steps - high % steps
    assert min(resolution) >= low, "min_bucket_reso must be equal or less than resolution"
    assert max(resolution) <= high, "max_bucket_reso must be equal or greater than resolution"
    return low, high


def glob_images(directory: str, base: str = "*") -> list[str]:
    """train_util.glob_images."""
    found = set()
    for ext in IMAGE_EXTENSIONS:
        found.update(glob.glob(os.path.join(glob.escape(directory), base + ext)))
    return sorted(found)


def read_caption(img_path: str, caption_extension: str) -> str | None:
    """DreamBoothDataset's read_caption (no wildcards): the caption file's first line."""
    base_name = os.path.splitext(img_path)[0]
    base_name_face_det = base_name
    tokens = base_name.split("_")
    if len(tokens) >= 5:
        base_name_face_det = "_".join(tokens[:-4])
    for cap_path in (base_name + caption_extension, base_name_face_det + caption_extension):
        if os.path.isfile(cap_path):
            with open(cap_path, "rt", encoding="utf-8") as f:
                lines = f.readlines()
            assert len(lines) > 0, f"caption file is empty: {cap_path}"
            return lines[0].strip()
    return None


def load_subsets(subsets: list[dict], dataset: dict, cwd: Path, warnings: list[str]) -> list[dict]:
    """DreamBoothDataset.__init__ over subsets (each with every parameter resolved): the images it trains
    on, as {"path", "caption", "num_repeats", "is_reg", "subset"}. image_dir is opened as written, so a
    relative one is relative to the trainer's working folder (`cwd`)."""
    if dataset["enable_bucket"]:
        res = dataset["resolution"]
        res = (res, res) if isinstance(res, int) else tuple(res)
        adjust_buckets(res, dataset["min_bucket_reso"], dataset["max_bucket_reso"], dataset["bucket_reso_steps"])
    images = []
    for sub in subsets:
        image_dir = sub["image_dir"]
        resolved = image_dir if os.path.isabs(image_dir) else os.path.join(cwd, image_dir)
        if sub["num_repeats"] < 1:
            warnings.append(f"ignore subset with image_dir='{image_dir}': num_repeats is less than 1")
            continue
        if not os.path.isdir(resolved):
            warnings.append(f"not directory: {image_dir}")
            warnings.append(f"ignore subset with image_dir='{image_dir}': no images found")
            continue
        paths = glob_images(resolved, "*")
        if not paths:
            warnings.append(f"ignore subset with image_dir='{image_dir}': no images found")
            continue
        for p in paths:
            cap = read_caption(p, sub["caption_extension"])
            if cap is None:
                cap = sub["class_tokens"] if sub["class_tokens"] is not None else ""
            images.append({"path": p, "caption": cap, "num_repeats": sub["num_repeats"], "is_reg": sub["is_reg"],
                           "subset": sub})
    return images


def from_dataset_config(path: Path, cwd: Path, args: dict | None = None) -> tuple[list[dict], list[str]]:
    """`--dataset_config path` (sd-scripts started in `cwd`, with command-line `args`): the images of every
    dataset and the warnings."""
    config = sanitize(tomllib.loads(Path(path).read_text(encoding="utf-8")))
    args = args or {}
    general = config.get("general", {})
    images, warnings = [], []
    for ds in config.get("datasets", []):
        dataset = {k: _fallback(k, ds, general, args, default=d) for k, d in DATASET_DEFAULTS.items()}
        subsets = [{k: _fallback(k, sub, ds, general, args, default=d) for k, d in SUBSET_DEFAULTS.items()}
                   for sub in ds.get("subsets", [])]
        images += load_subsets(subsets, dataset, cwd, warnings)
    return images, warnings


def from_train_data_dir(train_data_dir: Path, reg_data_dir: Path | None = None, cwd: Path = Path("."),
                        **args) -> tuple[list[dict], list[str]]:
    """The classic way, `--train_data_dir` (config_util.generate_dreambooth_subsets_config_by_subdirs):
    each `<repeats>_<class tokens>` sub-folder a subset; other command-line `args` apply to all."""
    warnings: list[str] = []

    def generate(base: Path | None, is_reg: bool) -> list[dict]:
        if base is None or not Path(base).is_dir():
            return []
        out = []
        for subdir in Path(base).iterdir():
            if not subdir.is_dir():
                continue
            tokens = subdir.name.split("_")
            try:
                n_repeats = int(tokens[0])
            except ValueError:
                warnings.append(f"ignore directory without repeats: {subdir.name}")
                continue
            if n_repeats < 1:
                continue
            out.append({"image_dir": str(subdir), "num_repeats": n_repeats, "is_reg": is_reg,
                        "class_tokens": "_".join(tokens[1:])})
        return out

    configs = generate(train_data_dir, False) + generate(reg_data_dir, True)
    dataset = {k: args.get(k, d) for k, d in DATASET_DEFAULTS.items()}
    subsets = [{k: _fallback(k, sub, args, default=d) for k, d in SUBSET_DEFAULTS.items()} for sub in configs]
    return load_subsets(subsets, dataset, cwd, warnings), warnings


def process_caption(caption: str, keep_tokens: int, shuffle: bool, rng: random.Random, separator: str = ",") -> str:
    """BaseDataset.process_caption's keep_tokens / shuffle_caption part (no dropout, warmup or wildcards)."""
    if not shuffle:
        return caption
    tokens = [t.strip() for t in caption.strip().split(separator)]
    fixed, flex = (tokens[:keep_tokens], tokens[keep_tokens:]) if keep_tokens > 0 else ([], tokens[:])
    rng.shuffle(flex)
    return ", ".join(fixed + flex)
