"""`idcluster --help` and the review page start without loading the pipeline's heavy
dependencies: each command imports its workflow when it runs (issue 19 item 5)."""

import subprocess
import sys

HEAVY = ("sklearn", "onnxruntime", "cv2", "mlflow", "idcluster.workflows.cluster", "idcluster.pipeline.stages")


def _loaded_after(code: str) -> set[str]:
    probe = f"import sys; {code}; print(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    return set(done.stdout.split())


def test_cli_import_loads_no_workflow():
    assert _loaded_after("import idcluster.cli") == set()


def test_review_first_view_modules_load_no_clusterer():
    # what `idcluster review` imports before it prints the URL and answers the first view
    code = "import idcluster.cli, idcluster.review.server, idcluster.review.store, idcluster.export.locking"
    assert _loaded_after(code) == set()
