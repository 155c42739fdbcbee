"""Hostile cases, inputs: bad bytes, encodings, symlinks, tables and labels. One bad item never
stops a batch: it gets an error record (exit 1), and every other item is still classified."""

import codecs
import json
import os
import shutil

import pytest
from conftest import ASSETS, TINY, jsonl, run_cli

import hdc.train.recipe


def no_traceback(result) -> None:
    assert "Traceback" not in result.output, result.output


def predict(model, *inputs, input=None):
    result = run_cli("predict", model, *inputs, input=input)
    no_traceback(result)
    return result, jsonl(result.stdout)


# ---------------------------------------------------------------------------------------------
# bytes that are not valid text


def test_stdin_with_invalid_bytes_classifies_every_line(tiny_run):
    result = run_cli("predict", tiny_run, "-", input=b"Bake the pie.\n\xff\xfe rain on Monday \xc3\n The Rovers won.\n")
    records = jsonl(result.stdout)
    assert result.exit_code == 0 and len(records) == 3
    assert "not valid UTF-8: 3 bytes replaced" in records[1]["warnings"][0] and "warnings" not in records[0]


def test_csv_with_invalid_bytes_warns_on_the_row_that_held_them(tiny_run, tmp_path):
    table = tmp_path / "docs.csv"
    table.write_bytes(b'id,text\na,Bake the pie.\nb,"Rain \xff\xfe on\nMonday"\nc,The Rovers won.\n')
    result = run_cli("predict", tiny_run, table)
    records = jsonl(result.stdout)
    assert result.exit_code == 0 and [r["id"] for r in records] == ["a", "b", "c"]
    assert records[1]["warnings"] == ["not valid UTF-8: 2 bytes replaced with U+FFFD"]
    assert "warnings" not in records[0] and "warnings" not in records[2]


def test_jsonl_with_a_lone_surrogate_keeps_the_lines_around_it(tiny_run, tmp_path):
    data = tmp_path / "docs.jsonl"
    data.write_text(
        '{"id": "a", "text": "Bake the pie."}\n'
        '{"id": "b\\ud83d", "text": "Rain \\ud83d on Monday."}\n'
        '{"id": "c", "text": "The Rovers won."}\n'
    )
    result, records = predict(tiny_run, data)
    assert result.exit_code == 0 and [r["id"] for r in records] == ["a", "b\ufffd", "c"]
    assert "lone surrogates" in records[1]["warnings"][0]


def test_jsonl_with_a_lone_surrogate_written_to_a_file_is_valid_utf8(tiny_run, tmp_path):
    data = tmp_path / "docs.jsonl"
    data.write_text('{"text": "Rain \\udc00 today."}\n')
    output = tmp_path / "out.jsonl"
    assert run_cli("predict", tiny_run, data, "--output", output).exit_code == 0
    assert len(jsonl(output.read_bytes().decode("utf-8"))) == 1


def test_training_on_a_lone_surrogate_works(tmp_path):
    data = tmp_path / "train.jsonl"
    rows = [json.loads(line) for line in open(ASSETS / "tiny_train.jsonl")]
    rows[0]["text"] += " \ud83d"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))  # json.dumps escapes it as \ud83d
    result = run_cli(
        "train", "--config", TINY, "--train", data, "--out", tmp_path / "run", "--set", "train.max_epochs=1"
    )
    no_traceback(result)
    assert result.exit_code == 0, result.output


def test_latin1_file_warns_with_the_count(tiny_run, tmp_path):
    path = tmp_path / "latin.txt"
    path.write_bytes("Caf\xe9 au lait, cr\xe8me br\xfbl\xe9e.".encode("latin-1"))
    result, [record] = predict(tiny_run, path)
    assert result.exit_code == 0 and record["warnings"] == ["not valid UTF-8: 4 bytes replaced with U+FFFD"]


def test_valid_utf8_holding_a_replacement_character_gets_no_warning(tiny_run, tmp_path):
    path = tmp_path / "fffd.txt"
    path.write_text("A replacement character \ufffd is valid text.", encoding="utf-8")
    result, [record] = predict(tiny_run, path)
    assert result.exit_code == 0 and "warnings" not in record


def test_a_nul_byte_inside_a_jsonl_text_is_text(tiny_run, tmp_path):
    data = tmp_path / "nul.jsonl"
    data.write_text('{"text": "Rain\\u0000 on Monday."}\n')
    result, [record] = predict(tiny_run, data)
    assert result.exit_code == 0 and "label" in record


# ---------------------------------------------------------------------------------------------
# encodings named by a byte-order mark


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be", "utf-32-le", "utf-8-sig"])
def test_files_with_a_byte_order_mark_are_decoded_and_said_so(tiny_run, tmp_path, encoding):
    bom = {"utf-16-le": codecs.BOM_UTF16_LE, "utf-16-be": codecs.BOM_UTF16_BE, "utf-32-le": codecs.BOM_UTF32_LE}
    path = tmp_path / "doc.txt"
    text = "Bake the pie for forty minutes until golden."
    path.write_bytes(bom.get(encoding, b"") + text.encode(encoding))
    result, [record] = predict(tiny_run, path)
    assert result.exit_code == 0 and record["label"] == "cooking"
    if encoding != "utf-8-sig":
        assert f"decoded as {encoding.upper()}" in record["warnings"][0]


def test_utf16_jsonl_is_read_line_by_line(tiny_run, tmp_path):
    data = tmp_path / "docs.jsonl"
    data.write_bytes(
        codecs.BOM_UTF16_LE + '{"id": "a", "text": "Bake the pie."}\n{"id": "b", "text": "Snow."}\n'.encode("utf-16-le")
    )
    result, records = predict(tiny_run, data)
    assert result.exit_code == 0 and [r["id"] for r in records] == ["a", "b"]


def test_jsonl_with_a_bom_predicts_and_trains(tiny_run, tmp_path):
    data = tmp_path / "bom.jsonl"
    data.write_bytes(codecs.BOM_UTF8 + (ASSETS / "tiny_test.jsonl").read_bytes())
    result, records = predict(tiny_run, data)
    assert result.exit_code == 0 and len(records) == 60 and records[0]["id"] == "test-0"
    assert run_cli("evaluate", tiny_run, data).exit_code == 0


def test_excel_csv_with_a_bom_trains_and_evaluates(tmp_path):
    data = tmp_path / "excel.csv"
    data.write_bytes(codecs.BOM_UTF8 + (ASSETS / "tiny_test.csv").read_bytes())
    run = tmp_path / "run"
    columns = ("--text-column", "body", "--label-column", "topic")
    result = run_cli("train", "--config", TINY, "--train", data, "--out", run, "--set", "train.max_epochs=1", *columns)
    no_traceback(result)
    assert result.exit_code == 0, result.output
    evaluated = run_cli("evaluate", run, data)  # the model's own columns: no flags needed
    assert evaluated.exit_code == 0 and "N            60" in evaluated.stdout


def test_stdin_starting_with_a_bom_loses_it(tiny_run):
    result = run_cli("predict", tiny_run, "-", input=codecs.BOM_UTF8 + b"Bake the pie.\n")
    [record] = jsonl(result.stdout)
    assert result.exit_code == 0 and record["label"] == "cooking"


# ---------------------------------------------------------------------------------------------
# folders, globs and links


@pytest.fixture()
def folder_with_links(tmp_path):
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / "a.txt").write_text("Bake the pie for forty minutes.")
    (docs / "sub" / "b.txt").write_text("The Rovers won the final.")
    os.symlink("loop", docs / "loop")  # points to itself
    os.symlink("nowhere.txt", docs / "broken.txt")
    os.symlink(".", docs / "sub" / "self")  # a folder that contains itself
    return docs


def test_symlink_loops_in_a_folder_become_error_records(tiny_run, folder_with_links):
    result, records = predict(tiny_run, folder_with_links)
    assert result.exit_code == 1
    ok = sorted(r["path"].rsplit("/", 1)[-1] for r in records if "label" in r)
    bad = {r["path"].rsplit("/", 1)[-1]: r["error"] for r in records if "error" in r}
    assert ok == ["a.txt", "b.txt"] and set(bad) == {"loop", "broken.txt"}
    assert "symbolic links" in bad["loop"] and "points to nothing" in bad["broken.txt"]


def test_a_recursive_glob_through_a_self_link_lists_each_file_once(tiny_run, folder_with_links):
    result, records = predict(tiny_run, str(folder_with_links / "**" / "*.txt"))
    assert sorted(r["path"].rsplit("/", 1)[-1] for r in records) == ["a.txt", "b.txt"]


def test_a_symlink_loop_given_by_name_is_an_error_record(tiny_run, folder_with_links):
    result, [record] = predict(tiny_run, folder_with_links / "loop")
    assert result.exit_code == 1 and "symlink loop" in record["error"]


def test_training_skips_links_and_binaries_in_class_folders_with_a_warning(tmp_path):
    root = tmp_path / "classes"
    shutil.copytree(ASSETS / "folders", root)
    os.symlink("loop.txt", root / "sport" / "loop.txt")  # points to itself
    (root / "weather" / "image.png").write_bytes(b"\x89PNG\x00\x00")
    result = run_cli(
        "train",
        "--config",
        TINY,
        "--train",
        root,
        "--out",
        tmp_path / "run",
        "--set",
        "data.valid_fraction=0",
        "--set",
        "train.max_epochs=1",
    )
    no_traceback(result)
    assert result.exit_code == 0, result.output
    assert "loop.txt: cannot read" in result.stderr and "image.png: binary file" in result.stderr


def test_an_empty_file_in_a_folder_is_an_error_record(tiny_run, tmp_path):
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "full.txt").write_text("Snow closed the roads.")
    result, records = predict(tiny_run, tmp_path)
    assert result.exit_code == 1 and [("error" in r) for r in records] == [True, False]


# ---------------------------------------------------------------------------------------------
# tables


def test_a_csv_input_is_a_table_of_documents_read_with_the_models_column(tmp_path):
    run = tmp_path / "run"
    data = ASSETS / "tiny_test.csv"
    columns = ("--text-column", "body", "--label-column", "topic")
    assert (
        run_cli(
            "train", "--config", TINY, "--train", data, "--out", run, "--set", "train.max_epochs=1", *columns
        ).exit_code
        == 0
    )
    result, records = predict(run, data)
    assert result.exit_code == 0 and len(records) == 60 and records[0]["id"] == "test-0"  # its "id" column


def test_a_csv_without_the_text_column_names_the_flag(tiny_run, tmp_path):
    data = tmp_path / "t.csv"
    data.write_text("body,topic\nRain today.,weather\n")
    result, [record] = predict(tiny_run, data)
    assert result.exit_code == 1 and "no column 'text'" in record["error"] and "--text-column" in record["error"]
    result, [record] = predict(tiny_run, data, "--text-column", "body")
    assert result.exit_code == 0 and record["label"] == "weather"


def test_a_ragged_csv_row_is_one_error_record(tiny_run, tmp_path):
    data = tmp_path / "t.csv"
    data.write_text('id,text\n1,Rain today.\n2,too,many\n3,"Bake, then serve."\n')
    result, records = predict(tiny_run, data)
    assert result.exit_code == 1 and [r.get("id") for r in records] == ["1", f"{data}:3", "3"]
    assert "3 fields but the header has 2" in records[1]["error"]


def test_a_tsv_input_is_a_table_too(tiny_run, tmp_path):
    data = tmp_path / "t.tsv"
    data.write_text("id\ttext\nx\tThe Rovers won the final.\n")
    result, [record] = predict(tiny_run, data)
    assert result.exit_code == 0 and record["id"] == "x" and record["label"] == "sport"


def test_a_nul_byte_in_a_csv_row_is_text(tiny_run, tmp_path):
    data = tmp_path / "t.csv"
    data.write_bytes(b"text\nRain today.\nSnow\x00 today.\n")
    result, records = predict(tiny_run, data)
    assert result.exit_code == 0 and [r["id"] for r in records] == [f"{data}:2", f"{data}:3"]


# ---------------------------------------------------------------------------------------------
# JSONL lines that are not documents


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"text": null}', "string 'text' field"),
        ("[1, 2, 3]", "not a JSON object"),
        ('{"text": "a"', "not valid JSON"),
        ("[" * 100000 + "]" * 100000, "nested too deeply"),
        ('"just a string"', "not a JSON object"),
    ],
    ids=["null", "array", "unterminated", "deep", "string"],
)
def test_a_bad_jsonl_line_is_one_error_record(tiny_run, tmp_path, line, message):
    data = tmp_path / "docs.jsonl"
    data.write_text('{"text": "Rain today."}\n' + line + '\n{"text": "The Rovers won."}\n')
    result, records = predict(tiny_run, data)
    assert result.exit_code == 1 and len(records) == 3
    assert message in records[1]["error"] and "label" in records[0] and "label" in records[2]


def test_an_uppercase_extension_is_read_as_jsonl(tiny_run, tmp_path):
    data = tmp_path / "DOCS.JSONL"
    data.write_text('{"id": "x", "text": "Rain today."}\n')
    result, [record] = predict(tiny_run, data)
    assert result.exit_code == 0 and record["id"] == "x"


# ---------------------------------------------------------------------------------------------
# labels


def test_a_list_label_in_single_label_evaluation_data_is_named(tiny_run, tmp_path):
    data = tmp_path / "eval.jsonl"
    data.write_text('{"text": "Rain.", "label": "weather"}\n{"text": "Pie.", "label": ["cooking", "sport"]}\n')
    result = run_cli("evaluate", tiny_run, data)
    no_traceback(result)
    assert result.exit_code == 1 and "eval.jsonl:2" in result.stderr and "single-label" in result.stderr


def test_a_one_label_list_in_single_label_data_is_that_label(tiny_run, tmp_path):
    data = tmp_path / "eval.jsonl"
    data.write_text('{"text": "Rain today.", "label": ["weather"]}\n{"text": "Bake the pie.", "label": "cooking"}\n')
    result = run_cli("evaluate", tiny_run, data, "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["n"] == 2


def test_a_list_label_in_validation_of_a_single_label_run_is_named(tmp_path):
    valid = tmp_path / "valid.jsonl"
    valid.write_text('{"text": "Pie.", "label": ["cooking", "sport"]}\n')
    args = [
        "train",
        "--config",
        TINY,
        "--train",
        ASSETS / "tiny_train.jsonl",
        "--valid",
        valid,
        "--out",
        tmp_path / "r",
    ]
    result = run_cli(*args)
    no_traceback(result)
    assert result.exit_code == 1 and "valid.jsonl:1" in result.stderr and "single-label" in result.stderr


@pytest.mark.parametrize("label", ["true", "null", "[]", '{"a": 1}', '""'])
def test_a_label_that_is_not_a_label_is_named(tmp_path, label):
    data = tmp_path / "train.jsonl"
    data.write_text('{"text": "Rain.", "label": "a"}\n' + '{"text": "Pie.", "label": ' + label + "}\n")
    result = run_cli("train", "--config", TINY, "--train", data, "--out", tmp_path / "r")
    no_traceback(result)
    assert result.exit_code == 1 and "train.jsonl:2" in result.stderr and "'label'" in result.stderr
    assert not (tmp_path / "r" / "checkpoints").exists()


def test_the_tokenizer_is_trained_on_what_segmentation_keeps(tmp_path, monkeypatch):
    """A 50 MB record once cost 5.3 GB of RSS: the tokenizer read all of it."""
    seen = []
    train_tokenizer = hdc.train.recipe.train_tokenizer

    def spy(texts, vocab_size):
        texts = list(texts)
        seen.append(max(map(len, texts)))
        return train_tokenizer(texts, vocab_size)

    monkeypatch.setattr(hdc.train.recipe, "train_tokenizer", spy)
    data = tmp_path / "train.jsonl"
    rows = [json.loads(line) for line in open(ASSETS / "tiny_train.jsonl")]
    rows[0]["text"] = "rain " * 2_000_000  # 10 MB
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    limits = ("--set", "train.max_epochs=1", "--set", "data.max_tokens=512")
    result = run_cli("train", "--config", TINY, "--train", data, "--out", tmp_path / "run", *limits)
    assert result.exit_code == 0, result.output
    assert seen == [512 * 16]
