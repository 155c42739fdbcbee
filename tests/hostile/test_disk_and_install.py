"""Hostile cases, the machine: a full disk, output folders that do not exist, files of the user's
in the way, and a runtime-only install without torch."""

import json
import resource
import shutil
import subprocess
import sys

from conftest import ASSETS, BLOCK_TORCH, jsonl, run_cli, same_records, tiny_train_args

HDC = [sys.executable, "-m", "hdc.cli"]


def limited(file_bytes: int):
    """A preexec_fn: files written by the child may grow to file_bytes at most (as on a full disk,
    writes past it fail; Python ignores SIGXFSZ, so they fail with an error, not a signal)."""
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (file_bytes, file_bytes))


def without_torch(*args: str, input: str | None = None) -> subprocess.CompletedProcess:
    code = BLOCK_TORCH + "from hdc.cli import main\nmain()\n"
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, args)], input=input, capture_output=True, text=True, timeout=120
    )


# ---------------------------------------------------------------------------------------------
# a runtime-only install


def test_train_without_torch_says_what_to_install(tmp_path):
    result = without_torch(*tiny_train_args(tmp_path / "run"))
    assert result.returncode == 1 and "pip install 'hdc[train]'" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "run").exists()


def test_export_without_torch_says_what_to_install(tiny_run, tmp_path):
    result = without_torch("export", tiny_run, tmp_path / "bundle")
    assert result.returncode == 1 and "pip install 'hdc[train]'" in result.stderr and "Traceback" not in result.stderr


def test_a_checkpoint_without_torch_points_to_a_bundle(tiny_run):
    result = without_torch("predict", tiny_run, "-", input="Rain.\n")
    assert result.returncode == 1 and "needs torch" in result.stderr and "export a bundle" in result.stderr


def test_evaluate_and_inspect_a_bundle_without_torch(tiny_bundle, tmp_path):
    assert without_torch("evaluate", tiny_bundle, ASSETS / "tiny_test.jsonl").returncode == 0
    result = without_torch("inspect", tiny_bundle, "-", "--html", tmp_path / "page.html", input="Rain today.\n")
    assert result.returncode == 0 and (tmp_path / "page.html").exists()


# ---------------------------------------------------------------------------------------------
# a full disk


def test_predict_output_on_a_full_disk_keeps_its_records_and_resumes(tiny_run, tmp_path):
    expected = jsonl(run_cli("predict", tiny_run, ASSETS / "tiny_test.jsonl").stdout)
    output = tmp_path / "out.jsonl"
    command = [*HDC, "predict", str(tiny_run), str(ASSETS / "tiny_test.jsonl"), "--output", str(output)]
    full = subprocess.run(command, capture_output=True, text=True, preexec_fn=limited(4000))
    assert full.returncode == 1 and "cannot write (File too large)" in full.stderr and "--resume" in full.stderr
    assert "Traceback" not in full.stderr and not output.exists()
    resumed = subprocess.run(command + ["--resume"], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert same_records(jsonl(output.read_text()), expected)


def test_predict_to_a_full_stdout(tiny_run):
    with open("/dev/full", "w") as full:
        result = subprocess.run(
            [*HDC, "predict", str(tiny_run), str(ASSETS / "tiny_test.jsonl")],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
        )
    assert result.returncode == 1 and "No space left on device" in result.stderr and "Traceback" not in result.stderr


def test_training_on_a_full_disk_names_the_checkpoint_and_the_free_space(tmp_path):
    out = tmp_path / "run"
    command = [*HDC, *tiny_train_args(out)]
    result = subprocess.run(command, capture_output=True, text=True, preexec_fn=limited(200_000))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "cannot write checkpoint" in result.stderr and "MB free" in result.stderr and "--resume" in result.stderr


# ---------------------------------------------------------------------------------------------
# where outputs go


def test_evaluate_report_into_a_missing_folder(tiny_run, tmp_path):
    report = tmp_path / "a" / "b"
    result = run_cli("evaluate", tiny_run, ASSETS / "tiny_test.jsonl", "--report", report)
    assert result.exit_code == 0 and (report / "report.json").exists() and (report / "confusion.png").exists()
    assert f"wrote {report / 'report.json'}" in result.stderr and "evaluate: 60 documents" in result.stderr


def test_evaluate_report_over_a_users_file_is_refused_before_scoring(tiny_run, tmp_path):
    (tmp_path / "report.json").write_text('{"mine": true}')
    result = run_cli("evaluate", tiny_run, ASSETS / "tiny_test.jsonl", "--report", tmp_path)
    assert result.exit_code == 2 and "not written by hdc" in result.stderr and "evaluate:" not in result.stderr
    assert (tmp_path / "report.json").read_text() == '{"mine": true}'


def test_evaluate_report_replaces_its_own(tiny_run, tmp_path):
    for _ in range(2):
        assert run_cli("evaluate", tiny_run, ASSETS / "tiny_test.jsonl", "--report", tmp_path).exit_code == 0


def test_inspect_pages_into_missing_folders(tiny_run, tmp_path):
    html, data = tmp_path / "x" / "why.html", tmp_path / "y" / "why.json"
    result = run_cli("inspect", tiny_run, "-", "--html", html, "--json", data, input="Rain today.\n")
    assert result.exit_code == 0 and html.exists() and json.loads(data.read_text())["labels"]
    assert f"wrote {html}" in result.stderr and f"wrote {data}" in result.stderr


def test_inspect_over_a_users_page_is_refused(tiny_run, tmp_path):
    page = tmp_path / "index.html"
    page.write_text("<html>my homepage</html>")
    result = run_cli("inspect", tiny_run, "-", "--html", page, input="Rain today.\n")
    assert result.exit_code == 2 and "not written by hdc" in result.stderr
    assert page.read_text() == "<html>my homepage</html>"
    again = run_cli("inspect", tiny_run, "-", "--html", tmp_path / "ours.html", input="Rain.\n")
    assert again.exit_code == 0
    assert run_cli("inspect", tiny_run, "-", "--html", tmp_path / "ours.html", input="Snow.\n").exit_code == 0


def test_inspect_out_dir_over_a_users_index_is_refused(tiny_run, tmp_path):
    (tmp_path / "index.html").write_text("mine")
    result = run_cli("inspect", tiny_run, ASSETS / "folders", "--out-dir", tmp_path)
    assert result.exit_code == 2 and (tmp_path / "index.html").read_text() == "mine"


def test_export_into_a_missing_parent_folder(tiny_run, tmp_path):
    result = run_cli("export", tiny_run, tmp_path / "deploy" / "v1")
    assert result.exit_code == 0 and (tmp_path / "deploy" / "v1" / "manifest.json").exists()
    shutil.rmtree(tmp_path / "deploy")
