"""hdc inspect: spans, weights, the HTML page, summaries of streamed documents, bundles."""

import html
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pytest
from conftest import ASSETS, TINY, TWO_STEPS, run_cli

TEXT = (
    "The Rovers won the match after a late goal in the second half. Fans filled the stadium to watch "
    "the final. Heavy rain is expected across the north on Monday.\n\nOfficials said more details would follow."
)


@pytest.fixture()
def document(tmp_path):
    path = tmp_path / "doc.txt"
    path.write_text(TEXT)
    return path


def inspect_json(model, path, tmp_path, *extra):
    out = tmp_path / "out.json"
    result = run_cli("inspect", model, path, "--json", out, *extra)
    assert result.exit_code == 0, result.output
    return json.loads(out.read_text())


def test_spans_round_trip_and_weights_sum(tiny_run, document, tmp_path):
    report = inspect_json(tiny_run, document, tmp_path)
    assert report["mode"] == "full" and report["labels"] == ["sport"]
    assert abs(sum(report["probabilities"].values()) - 1) < 1e-5
    assert abs(sum(s["weight"] for s in report["sentences"]) - 1) < 1e-5
    assert abs(sum(s["evidence"] for s in report["sentences"]) - 1) < 1e-5
    shares = [report["path_shares"]["dense"], *report["path_shares"]["queries"]]
    assert len(shares) == 3 and min(shares) >= 0 and abs(sum(shares) - 1) < 1e-6
    for s in report["sentences"]:
        phrases = [p for p in report["phrases"] if p["sentence"] == s["index"]]
        assert abs(sum(p["weight"] for p in phrases) - 1) < 1e-5
        a, b = s["span"]
        assert TEXT[a:b].strip() == TEXT[a:b] and TEXT[a:b]
    for p in report["phrases"]:
        tokens = [t for t in report["tokens"] if t["phrase"] == p["index"]]
        assert abs(sum(t["weight"] for t in tokens) - 1) < 1e-5
        a, b = p["span"]
        assert TEXT[a:b] and all(a <= t["span"][0] <= t["span"][1] <= b for t in tokens)
        # the tokens' spans cover the phrase's text, whitespace aside
        assert "".join(TEXT[t["span"][0] : t["span"][1]] for t in tokens) == "".join(TEXT[a:b].split())
    selected = [p for p in report["phrases"] if p["selected"]]
    assert selected and len(report["selected"]) >= len(selected)
    for q in range(2):  # ranks of each query are 1..P over the real phrases
        ranks = sorted(p["queries"][q]["rank"] for p in report["phrases"])
        assert ranks == list(range(1, len(report["phrases"]) + 1))


@pytest.mark.parametrize("text", ["Goal!", "Stir the soup slowly and add a pinch of salt."])
def test_one_word_and_one_sentence(tiny_run, tmp_path, text):
    path = tmp_path / "short.txt"
    path.write_text(text)
    report = inspect_json(tiny_run, path, tmp_path)
    values = [s[k] for s in report["sentences"] for k in ("weight", "evidence")]
    values += [t["weight"] for t in report["tokens"]]
    assert np.isfinite(values).all() and len(report["sentences"]) == 1


def test_empty_after_cleaning_is_a_clear_error(tiny_run, tmp_path):
    path = tmp_path / "blank.txt"
    path.write_text("   \n\n   ")
    result = run_cli("inspect", tiny_run, path)
    assert result.exit_code == 1 and "empty after cleaning" in result.output and "Traceback" not in result.output


class Collector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.text, self.tags, self.external = [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        for name, value in attrs:
            if name in ("src", "href") and value and value.startswith(("http:", "https:", "//")):
                self.external.append(value)

    def handle_data(self, data):
        self.text.append(data)


def test_html_is_self_contained_and_shows_the_selection(tiny_run, document, tmp_path):
    page = tmp_path / "page.html"
    assert run_cli("inspect", tiny_run, document, "--html", page, "--json", tmp_path / "r.json").exit_code == 0
    report = json.loads((tmp_path / "r.json").read_text())
    parser = Collector()
    parser.feed(page.read_text())
    text = "".join(parser.text)
    assert not parser.external and "script" not in parser.tags
    assert "sport" in text and "<style>" in page.read_text()
    for s in report["selected"]:
        assert f"q{s['query'] + 1}·{s['rank']}" in text


def test_checkpoint_and_bundle_agree(tiny_run, tiny_bundle, document, tmp_path):
    a = inspect_json(tiny_run, document, tmp_path)
    b = inspect_json(tiny_bundle, document, tmp_path)
    assert a["labels"] == b["labels"] and [s["phrase"] for s in a["selected"]] == [s["phrase"] for s in b["selected"]]
    for key in ("sentences", "tokens", "phrases"):
        for x, y in zip(a[key], b[key]):
            assert x["span"] == y["span"] and abs(x["weight"] - y["weight"]) <= 1e-4
            assert abs(x.get("evidence", 0) - y.get("evidence", 0)) <= 1e-4
    assert np.allclose(a["path_shares"]["queries"], b["path_shares"]["queries"], atol=1e-3)
    for x, y in zip(a["selected"], b["selected"]):
        assert abs(x["score"] - y["score"]) <= 1e-4 and abs(x["fusion"] - y["fusion"]) <= 1e-4
    assert a["label_evidence"].keys() == b["label_evidence"].keys() == {"sport"}
    for x, y in zip(a["label_evidence"]["sport"], b["label_evidence"]["sport"]):
        assert x["span"] == y["span"] and abs(x["drop"] - y["drop"]) <= 1e-3


def test_each_predicted_label_leans_on_the_sentence_of_its_own_words(tmp_path):
    """Multi-label: every label the model gives has its own evidence, first the sentence that
    holds that label's words, whose n-grams taken out of the bag lower the label's logit."""
    out = tmp_path / "multi"
    train = ("--train", ASSETS / "multilabel.jsonl", "--valid", ASSETS / "multilabel.jsonl", "--out", out)
    linear = ("--set", "model.ngram_linear=true", "--set", "train.deep_weights=[0.0]")
    result = run_cli("train", "--config", TINY, *train, *TWO_STEPS, *linear)
    assert result.exit_code == 0, result.output
    sentences = (
        "Heavy rain is expected across the north on Saturday.",
        "Chop the onions finely before frying them for the risotto.",
        "The report was published on Friday morning.",
    )
    path = tmp_path / "two.txt"
    path.write_text(" ".join(sentences))
    report = inspect_json(out, path, tmp_path)
    assert set(report["labels"]) == {"weather", "cooking"} == report["label_evidence"].keys()
    firsts = {label: rows[0] for label, rows in report["label_evidence"].items()}
    assert [report["sentences"][firsts[label]["index"]]["span"] for label in ("weather", "cooking")] == [
        s["span"] for s in report["sentences"][:2]
    ]
    assert all(row["drop"] > 0 for row in firsts.values())
    summary = run_cli("inspect", out, path).stdout
    assert "why weather, by its n-grams" in summary and "why cooking, by its n-grams" in summary
    page = tmp_path / "two.html"
    assert run_cli("inspect", out, path, "--html", page).exit_code == 0
    for label in ("weather", "cooking"):  # a list of its own, first a link to its sentence
        assert f'<h3>{label}</h3><ol><li><a href="#s{firsts[label]["index"]}">' in page.read_text()


def test_streamed_document_gets_a_summary(tiny_bundle, tmp_path):
    texts = [json.loads(line)["text"] for line in open(ASSETS / "tiny_train.jsonl")]
    path = tmp_path / "long.txt"
    path.write_text("\n\n".join(texts * 3))
    report = inspect_json(tiny_bundle, path, tmp_path, "--block-tokens", "512", "--top", "3")
    assert report["mode"] == "summary" and "tokens" not in report
    assert report["tokens_total"] > 5000 and len(report["sentences"]) >= 3
    text = path.read_text()
    for item in report["selected"] + report["sentences"]:
        a, b = item["span"]
        assert item["context"]["text"] == text[a:b]
        assert text[:a].endswith(item["context"]["before"]) and text[b:].startswith(item["context"]["after"])
    # the summary's top sentences are the whole document's: the candidates kept while streaming
    # hold every sentence that could rank first
    whole = inspect_json(tiny_bundle, path, tmp_path)
    assert whole["mode"] == "full"
    best = sorted(whole["sentences"], key=lambda s: (-s["evidence"], s["index"]))[:3]
    assert [s["index"] for s in report["sentences"][:3]] == [s["index"] for s in best]
    assert np.allclose([s["evidence"] for s in report["sentences"][:3]], [s["evidence"] for s in best], atol=1e-4)
    page = tmp_path / "long.html"
    assert run_cli("inspect", tiny_bundle, path, "--block-tokens", "512", "--html", page).exit_code == 0
    html_text = page.read_text()
    assert "Selected phrases" in html_text and page.stat().st_size < 200_000
    # the "why" panel comes first, best sentence first, each entry a link to its snippet
    why = html_text[html_text.index('class="why"') : html_text.index("</section>")]
    first = re.search(r'<li><a href="#(s\d+)">([^<]*)</a>', why)
    assert first and f'id="{first.group(1)}"' in html_text
    assert first.group(2) == html.escape(" ".join(report["sentences"][0]["context"]["text"].split())[:160])


def test_many_files_with_an_index(tiny_run, tmp_path):
    out = tmp_path / "reports"
    result = run_cli("inspect", tiny_run, ASSETS / "folders" / "sport", str(tmp_path / "missing.txt"), "--out-dir", out)
    assert result.exit_code == 1  # the missing file; the others still get their pages
    pages = sorted(p.name for p in out.glob("*.html"))
    assert "index.html" in pages and len(pages) == 5 and len(list(out.glob("*.json"))) == 4
    index = (out / "index.html").read_text()
    assert all(p in index for p in pages if p != "index.html") and "missing.txt" in index


def test_summary_on_stdout(tiny_run, document):
    result = run_cli("inspect", tiny_run, document)
    assert result.exit_code == 0
    assert result.stdout.splitlines()[0].startswith(str(document) + ": sport")
    assert "top sentences" in result.stdout and "selected phrases" in result.stdout


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (make test-browser installs it)")
def test_page_renders_in_chromium(tiny_run, document, tmp_path):
    page, shot = tmp_path / "page.html", tmp_path / "page.png"
    assert run_cli("inspect", tiny_run, document, "--html", page).exit_code == 0
    # a headless browser with no network, no first-run work and a profile of its own
    browser = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
    browser += [
        "--no-first-run",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    dom = subprocess.run([*browser, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120).stdout
    assert 'class="sentence"' in dom and "sport" in dom
    subprocess.run(
        [*browser, "--hide-scrollbars", "--window-size=1000,800", f"--screenshot={shot}", page.as_uri()],
        capture_output=True,
        timeout=120,
    )
    assert shot.exists() and shot.stat().st_size > 10_000


def _playwright():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    return sync_playwright


@pytest.mark.skipif(
    CHROMIUM is None or _playwright() is None, reason="needs Chromium and playwright (make test-browser)"
)
def test_switch_shows_each_paths_weights_by_click_in_chromium(tiny_run, document, tmp_path):
    page_file = tmp_path / "page.html"
    assert run_cli("inspect", tiny_run, document, "--html", page_file).exit_code == 0
    with _playwright()() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-background-networking"])
        page = browser.new_page(viewport={"width": 390, "height": 800})  # a phone's width: no hover anywhere
        page.goto(page_file.as_uri())
        backgrounds = "els => els.map(e => getComputedStyle(e).backgroundColor)"
        visible = "els => els.map(e => e.offsetParent !== null)"
        dense_heat = page.eval_on_selector_all(".t", backgrounds)
        assert page.eval_on_selector_all(".levels .dense", visible) == [True] * 4
        assert page.eval_on_selector_all(".levels .sparse", visible) == [False] * 4
        page.click("label[for=path-sparse]")
        assert page.eval_on_selector_all(".levels .sparse", visible) == [True] * 4
        assert page.eval_on_selector_all(".levels .dense", visible) == [False] * 4
        sparse_heat = page.eval_on_selector_all(".t", backgrounds)
        expected = page.eval_on_selector_all(".t", "els => els.map(e => e.style.getPropertyValue('--s'))")
        # each painted word now shows its sparse weight, which is not its dense one everywhere
        assert sparse_heat != dense_heat
        assert all(float(a) == 0 or bg.startswith("rgba") for a, bg in zip(expected, sparse_heat))
        page.screenshot(path=str(tmp_path / "narrow.png"), full_page=True)
        browser.close()
    assert (tmp_path / "narrow.png").stat().st_size > 10_000


def test_every_painted_word_carries_both_paths_and_the_panel_lists_four_levels(tiny_run, document, tmp_path):
    import re

    page = tmp_path / "page.html"
    assert run_cli("inspect", tiny_run, document, "--html", page).exit_code == 0
    html_text = page.read_text()
    styles = re.findall(r'<span class="t" style="([^"]*)"', html_text)
    assert styles and all(re.fullmatch(r"--d:[0-9.]+;--s:[0-9.]+", s) for s in styles)
    assert max(float(s.split(";")[0][4:]) for s in styles) == 0.85  # the dense peak is painted fully
    levels = html_text[html_text.index('class="levels"') :]
    assert re.findall(r"<dt>(\w+)</dt>", levels) == ["document", "sentence", "phrase", "word"]
    assert html_text.index('id="path-dense"') < html_text.index('class="levels"') < html_text.index('class="doc"')


def test_page_answers_why_at_the_top_with_links_into_the_text(tiny_run, document, tmp_path):
    import re

    page = tmp_path / "page.html"
    assert run_cli("inspect", tiny_run, document, "--html", page).exit_code == 0
    html_text = page.read_text()
    why = html_text.index('class="why"')
    assert why < html_text.index('class="sentence"')  # the panel comes before the text
    links = re.findall(r'href="#(s\d+)"', html_text[why:])
    assert links and all(f'id="{anchor}"' in html_text for anchor in links)


def test_heat_is_per_word_and_plain_sentences_get_none(tiny_run, tmp_path):
    import re

    path = tmp_path / "doc.txt"
    path.write_text("The Rovers won the final. Officials said more details would follow later.")
    page = tmp_path / "page.html"
    assert run_cli("inspect", tiny_run, path, "--html", page, "--json", tmp_path / "r.json").exit_code == 0
    painted = re.findall(r'<span class="t"[^>]*>([^<]*)</span>', page.read_text())
    words = set(path.read_text().split())  # each with its punctuation
    assert painted and all(piece in words for piece in painted)  # whole words, no subword pieces
    report = json.loads((tmp_path / "r.json").read_text())
    top = max(s["evidence"] for s in report["sentences"])
    for s in report["sentences"]:
        body = page.read_text().split(f'id="s{s["index"]}"')[1].split('class="sentence"')[0]
        assert ('class="t"' in body) == (s["evidence"] >= 0.02 * top)
