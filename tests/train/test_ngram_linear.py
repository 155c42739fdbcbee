"""The n-gram branch's fixed parts: IDF weights, and the linear classifier fitted after training."""

import json
import re

import numpy as np
import torch
import yaml
from conftest import ASSETS, TINY, TWO_STEPS, run_cli, tiny_train_args

from hdc.model import LOG_TF


def test_ngram_idf_ignores_rare_buckets():
    """Buckets in fewer than min_df training documents, and buckets no training document has,
    get no weight: their table rows were never (or barely) trained."""
    from hdc.text import Segments
    from hdc.train.ngram_linear import ngram_idf

    def document(buckets):
        empty = np.zeros((0, 2), np.int64)
        return Segments(np.zeros((1, 1), np.int32), np.zeros(1, np.int32), empty, empty, None, np.array([buckets]))

    docs = [document([1, 2, 0]), document([1, 3, 3]), document([1, 2, 0])]
    idf = ngram_idf(docs, rows=6, min_df=2)
    assert idf[0] == 0 and idf[3] == 0 and idf[4] == 0 and idf[5] == 0  # padding, df 1, df 0, df 0
    assert np.isclose(idf[1], 1.0) and np.isclose(idf[2], np.log(4 / 3) + 1)
    assert ngram_idf(docs, rows=6, min_df=1)[3] > idf[2]  # kept at min_df 1: rarer, so heavier


def test_ngram_linear_classifier_is_fitted_into_the_best_checkpoint(tmp_path):
    """model.ngram_linear: after training, best.ckpt holds scale x the weights of a LinearSVC
    fitted on the training documents' n-gram bags; last.ckpt keeps the zero table that training
    saw, so --resume goes on from the trained model alone."""
    from sklearn.svm import LinearSVC

    from hdc.checkpoint import model_from_checkpoint, read_checkpoint
    from hdc.data import load_examples
    from hdc.train.ngram_linear import ngram_matrix

    out = tmp_path / "linear"
    grid = ("--set", "train.ngram_linear_c=[0.5]", "--set", "train.ngram_linear_scale=[2.0]")
    grid += ("--set", "train.deep_weights=[1.0]", "--set", "train.ngram_linear_tf=[sublinear]")
    result = run_cli(*tiny_train_args(out), *TWO_STEPS, "--set", "model.ngram_linear=true", *grid)
    assert result.exit_code == 0, result.output
    fitted = json.loads(result.stdout)["fitted_after_training"]
    assert (fitted["c"], fitted["scale"]) == (0.5, 2.0) and "valid_macro_f1_after" not in fitted  # one candidate
    assert (
        "the n-gram linear classifier's (sublinear TF, word weight 1, C=0.5, class weights none) x 2" in result.stderr
    )
    assert not torch.load(out / "checkpoints/last.ckpt", weights_only=True)["state_dict"]["model.ngram_linear"].any()

    model, info = model_from_checkpoint(read_checkpoint(out / "checkpoints/best.ckpt"), "best.ckpt")
    examples = load_examples(ASSETS / "tiny_train.jsonl")
    segments = [info.segmenter().segment(e.text, max_tokens=info.config.data.max_tokens) for e in examples]
    features = ngram_matrix(segments, model.ngram_idf, "sublinear")
    svm = LinearSVC(C=0.5, dual=True, max_iter=5000, random_state=0).fit(
        features, [info.labels.index(e.label) for e in examples]
    )
    assert model.ngram_linear.abs().max() > 0.1
    assert np.allclose(model.ngram_linear.numpy(), 2.0 * svm.coef_.T, atol=1e-5)
    assert np.allclose(model.ngram_linear_bias.numpy(), 2.0 * svm.intercept_, atol=1e-5)


def test_ngram_linear_choice_is_made_on_validation(tmp_path):
    out = tmp_path / "chosen"
    grid = ("--set", "train.ngram_linear_c=[0.1, 1.0]", "--set", "train.ngram_linear_scale=[0.5, 4.0]")
    grid += ("--set", "train.linear_cv_below=0")  # every setting on validation, however few its documents
    result = run_cli(*tiny_train_args(out), *TWO_STEPS, "--set", "model.ngram_linear=true", *grid)
    assert result.exit_code == 0, result.output
    chosen = json.loads(result.stdout)["fitted_after_training"]
    assert chosen["c"] in (0.1, 1.0) and chosen["scale"] in (0.5, 4.0) and chosen["deep_weight"] in (0.0, 1.0)
    assert chosen["tf"] in ("binary", "sublinear")
    assert 0 <= chosen["valid_macro_f1_before"] <= 1 and 0 <= chosen["valid_macro_f1_after"] <= 1
    assert "validation macro-F1" in result.stderr
    weights = torch.load(out / "checkpoints/best.ckpt", weights_only=True)["state_dict"]
    # progress: a line as each fit ends, numbered to the number of fits announced
    announced = int(re.search(r"linear classifier: (\d+) fits", result.stderr).group(1))
    assert re.findall(r"linear fit (\d+)/(\d+)", result.stderr) == [
        (str(k), str(announced)) for k in range(1, announced + 1)
    ]
    assert weights["model.ngram_linear_log_tf"].item() == LOG_TF[chosen["tf"]]


def test_the_word_ngrams_weight_is_chosen_on_validation_after_the_other_settings(tmp_path):
    """Word n-grams in rows of their own: the grid's other settings are fitted at the first word
    weight, then one more fit per other word weight, with the best of them; the model keeps the
    weight the summary names."""
    out = tmp_path / "words"
    words = ("--set", "model.ngram_word_orders=[1, 2]", "--set", "model.ngram_word_buckets=512")
    grid = ("--set", "train.ngram_linear_c=[0.1, 1.0]", "--set", "train.ngram_linear_word_weight=[1.0, 0.25, 4.0]")
    grid += ("--set", "train.linear_cv_below=0", "--set", "train.ngram_linear_class_weight=[none]")
    result = run_cli(*tiny_train_args(out), *TWO_STEPS, "--set", "model.ngram_linear=true", *words, *grid)
    assert result.exit_code == 0, result.output
    fitted = json.loads(result.stdout)["fitted_after_training"]
    assert fitted["word_weight"] in (1.0, 0.25, 4.0)
    announced = [int(n) for n in re.findall(r"linear classifier: (\d+) fits", result.stderr)]
    assert announced == [2 * 2, 2]  # 2 TFs x 2 Cs at weight 1; then 0.25 and 4 with the best of those
    assert "word weight 4" in result.stderr and "word weight 0.25" in result.stderr
    weights = torch.load(out / "checkpoints/best.ckpt", weights_only=True)["state_dict"]
    assert weights["model.ngram_linear_word_weight"].item() == fitted["word_weight"]


def test_walk_outward_goes_each_way_only_while_a_step_scores_more():
    from hdc.train.ngram_linear import walk_outward

    grid, rounds = [0.25, 0.5, 1.0, 2.0, 4.0, 8.0], []
    peak_at_4 = {0.25: 0.1, 0.5: 0.3, 1.0: 0.5, 2.0: 0.6, 4.0: 0.7, 8.0: 0.65}

    def score_round(values):
        rounds.append(values)
        return {v: peak_at_4[v] for v in values}

    assert walk_outward(grid, 1.0, 0.5, score_round) == [0.5, 2.0, 4.0, 8.0]
    assert rounds == [[0.5, 2.0], [4.0], [8.0]]  # down stops at once; up stops after 8 scores less than 4
    rounds.clear()
    flat = {v: 0.5 for v in grid}  # a tie is no step up: the walk stops both ways after one step
    assert walk_outward(grid, 1.0, 0.5, lambda values: rounds.append(values) or {v: flat[v] for v in values}) == [
        0.5,
        2.0,
    ]
    assert walk_outward([1.0], 1.0, 0.5, score_round) == []


def test_a_model_with_one_kind_of_ngram_tries_no_word_weight(tmp_path):
    out = tmp_path / "chars"
    grid = ("--set", "train.ngram_linear_word_weight=[1.0, 4.0]", "--set", "train.linear_cv_below=0")
    result = run_cli(*tiny_train_args(out), *TWO_STEPS, "--set", "model.ngram_linear=true", *grid)  # chars only
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["fitted_after_training"]["word_weight"] in (1.0, None)  # None: no linear part
    assert len(re.findall(r"linear classifier: \d+ fits", result.stderr)) == 1 and "word weight 4" not in result.stderr


def test_multilabel_thresholds_are_set_in_the_bias_and_named_in_the_summary(tmp_path):
    """The same fit with and without thresholds, at the C the thresholds were chosen with
    (validation on the training documents, where every choice scores alike, so the thresholds
    are kept): the summary gives one for each label, and the bias is the plain fit's less them."""
    from hdc.train.recipe import refit

    out, documents = tmp_path / "ml", ASSETS / "multilabel.jsonl"
    result = run_cli(
        "train", "--config", TINY, "--train", documents, "--out", out, *TWO_STEPS, "--set", "model.ngram_linear=true"
    )
    assert result.exit_code == 0, result.output
    assert "label thresholds" in result.stderr
    config = yaml.safe_load((out / "config.yaml").read_text())["train"]
    folds, cs = config["threshold_folds"], config["ngram_linear_c"]
    assert f"cross-validation fit {folds * len(cs)}/{folds * len(cs)}" in result.stderr

    def bias_after_refit(*overrides: str) -> tuple[dict, torch.Tensor]:
        fitted = refit(out, documents, documents, overrides)["fitted_after_training"]
        weights = torch.load(out / "checkpoints/best.ckpt", weights_only=True)["state_dict"]
        return fitted, weights["model.ngram_linear_bias"]

    fitted, bias = bias_after_refit()
    plain, unshifted = bias_after_refit("train.threshold_folds=0", f"train.ngram_linear_c=[{fitted['c']}]")
    labels = json.loads((out / "labels.json").read_text())
    assert sorted(fitted["thresholds"]) == sorted(labels) and "thresholds" not in plain
    assert fitted["scale"] == plain["scale"] and fitted["c"] == plain["c"]
    shift = torch.tensor([fitted["thresholds"][label] for label in labels]) * fitted["scale"]
    assert torch.allclose(bias, unshifted - shift, atol=1e-3)


def test_without_validation_the_linear_classifier_takes_the_middle_of_its_grids(tmp_path):
    """No validation to choose on: the first TF, the middle C and scale, and the class weights
    of train.class_weight."""
    out = tmp_path / "all"
    args = ("train", "--config", TINY, "--train", ASSETS / "tiny_train.jsonl", "--out", out, *TWO_STEPS)
    linear = ("--set", "model.ngram_linear=true", "--set", "train.deep_weights=[1.0]")
    no_cv = ("--set", "train.linear_cv_below=0")
    result = run_cli(*args, *linear, *no_cv, "--set", "data.valid_fraction=0", "--set", "train.class_weight=balanced")
    assert result.exit_code == 0, result.output
    fitted = json.loads(result.stdout)["fitted_after_training"]
    assert (fitted["tf"], fitted["c"], fitted["class_weight"], fitted["scale"]) == ("binary", 3.0, "balanced", 4.0)


def _bags(informative: bool, n: int = 60, seed: int = 0):
    """n documents of 3 balanced classes as sparse bags: class-specific columns when
    `informative`, else columns drawn at random whatever the class."""
    from scipy.sparse import csr_matrix

    rng = np.random.default_rng(seed)
    targets = np.arange(n) % 3
    x = rng.random((n, 30)) * (rng.random((n, 30)) < 0.2)
    if informative:
        x[np.arange(n), targets * 10 + rng.integers(0, 3, n)] += 1.0
    return csr_matrix(x.astype(np.float32)), targets


def test_cross_validation_chooses_the_setting_whose_held_out_folds_score_best():
    """The TF whose bags tell the classes apart wins though the other comes first in the grid
    (the first would win a tie), and the score is the out-of-fold macro-F1 of the winner."""
    from hdc.train.ngram_linear import cross_validate_linear

    noise, targets = _bags(informative=False)
    signal, _ = _bags(informative=True)
    settings = [("sublinear", 1.0, 1.0, "none"), ("binary", 1.0, 1.0, "none")]
    bags = {"sublinear": noise, "binary": signal}
    setting, score = cross_validate_linear(lambda tf, _: bags[tf], targets, 3, settings, seed=0)
    assert setting == ("binary", 1.0, 1.0, "none") and score > 0.6  # chance: 1/3
    same, _ = cross_validate_linear(lambda tf, _: signal, targets, 3, settings, seed=0)
    assert same == settings[0]  # a tie goes to the first


def test_cross_validation_needs_two_documents_of_every_class():
    from hdc.train.ngram_linear import cross_validate_linear

    x, targets = _bags(informative=True, n=7)
    targets[-1] = 3  # a class with one document: no stratified split holds it out and trains on it
    assert cross_validate_linear(lambda tf, _: x, targets, 4, [("binary", 1.0, 1.0, "none")] * 2, seed=0) is None


def test_with_few_validation_documents_cross_validation_chooses_the_linear_settings(tmp_path):
    """Fewer validation documents than train.linear_cv_below: one linear setting is fitted, the
    cross-validated one (TF and C, then the word weight with them), and validation then scores
    only the deep weights and scales; with no validation at all, the cross-validated setting is
    taken at the middle scale."""
    out = tmp_path / "cv"
    grid = ("--set", "model.ngram_linear=true", "--set", "train.ngram_linear_c=[0.1, 1.0]")
    words = ("--set", "model.ngram_word_orders=[1]", "--set", "model.ngram_word_buckets=512")
    words += ("--set", "train.ngram_linear_word_weight=[1.0, 0.25, 4.0]")
    result = run_cli(*tiny_train_args(out), *TWO_STEPS, *grid, *words, "--set", "train.linear_cv_below=1000")
    assert result.exit_code == 0, result.output
    fitted = json.loads(result.stdout)["fitted_after_training"]
    assert 0 <= fitted["linear_cv_macro_f1"] <= 1 and "valid_macro_f1_after" in fitted
    assert "cross-validation of 4 settings on the training split" in result.stderr
    assert "cross-validation of 2 settings on the training split" in result.stderr  # the other word weights
    assert "linear classifier: 1 fits" in result.stderr and fitted["word_weight"] in (1.0, 0.25, 4.0)

    out = tmp_path / "cv-alone"
    args = ("train", "--config", TINY, "--train", ASSETS / "tiny_train.jsonl", "--out", out, *TWO_STEPS)
    result = run_cli(*args, *grid, "--set", "data.valid_fraction=0")
    assert result.exit_code == 0, result.output
    fitted = json.loads(result.stdout)["fitted_after_training"]
    assert "linear_cv_macro_f1" in fitted and fitted["scale"] == 4.0 and "valid_macro_f1_after" not in fitted


def test_the_linear_classifier_reads_training_documents_past_max_tokens(tmp_path):
    """data.max_tokens cuts what the network trains on; the linear classifier reads on to
    data.fit_max_tokens. Here only words past the first 12 tokens tell the labels apart."""
    preamble = "This agreement is made between the parties named below on the date written above. "
    words = {"red": ("apple", "cherry", "brick"), "blue": ("ocean", "sky", "berry")}
    for split, n in (("train", 24), ("valid", 8), ("test", 8)):
        with open(tmp_path / f"{split}.jsonl", "w") as f:
            for i in range(n):
                label = ("red", "blue")[i % 2]
                tail = " ".join(words[label][(i // 2 + j) % 3] for j in range(4))
                f.write(json.dumps({"text": preamble + f"It names the {tail}.", "label": label}) + "\n")

    def accuracy(out, *extra):
        train = ("--train", tmp_path / "train.jsonl", "--valid", tmp_path / "valid.jsonl", "--out", out)
        cut = ("--set", "model.ngram_linear=true", "--set", "data.max_tokens=12", "--set", "train.deep_weights=[0.0]")
        result = run_cli("train", "--config", TINY, *train, *TWO_STEPS, *cut, *extra)
        assert result.exit_code == 0, result.output
        report = run_cli("evaluate", out, tmp_path / "test.jsonl", "--json")
        return json.loads(report.stdout)["accuracy"]

    assert accuracy(tmp_path / "further") == 1.0
    assert accuracy(tmp_path / "cut", "--set", "data.fit_max_tokens=12") <= 0.75


def test_refitting_a_fitted_run_gives_the_same_fit(tmp_path):
    """hdc.train.refit starts from the network as training left it, not from the fitted model."""
    from hdc.train.recipe import refit

    out = tmp_path / "refit"
    result = run_cli(*tiny_train_args(out), *TWO_STEPS, "--set", "model.ngram_linear=true")
    assert result.exit_code == 0, result.output
    best = out / "checkpoints/best.ckpt"
    first = torch.load(best, weights_only=True)["state_dict"]
    fitted = json.loads(result.stdout)["fitted_after_training"]
    again = refit(out, ASSETS / "tiny_train.jsonl", ASSETS / "tiny_valid.jsonl")["fitted_after_training"]
    assert {**again, "seconds": 0} == {**fitted, "seconds": 0}
    second = torch.load(best, weights_only=True)["state_dict"]
    # the fits run in threads, which share liblinear's random draws (hdc.train.ngram_linear)
    assert first.keys() == second.keys() and all(torch.allclose(first[k], second[k], atol=1e-4) for k in first)


def test_fit_linear_gives_a_column_per_class():
    """Two classes: scikit-learn's one decision function goes to class 1 (class 0 keeps zeros).
    Multi-label: one column per label; a label on every document, or on none, gets zero
    weights and a bias that gives it to every document, or to none."""
    from scipy.sparse import csr_matrix

    from hdc.train.ngram_linear import fit_linear

    rng = np.random.default_rng(0)
    features = csr_matrix(rng.random((40, 6)))
    two = (features[:, 0].toarray().ravel() > 0.5).astype(int)
    weights, bias = fit_linear(features, two, 2, multilabel=False, c=1.0)
    assert weights.shape == (6, 2) and not weights[:, 0].any() and bias[0] == 0 and weights[0, 1] > 0
    labels = np.stack([two, np.ones(40), 1 - two, np.zeros(40)], 1).astype(np.float32)
    weights, bias = fit_linear(features, labels, 4, multilabel=True, c=1.0)
    assert not weights[:, 1].any() and not weights[:, 3].any() and bias[1] > 0 > bias[3]
    assert weights[0, 0] > 0 > weights[0, 2]


def test_label_thresholds_lower_a_rare_labels_threshold_below_zero():
    """A label on 1 document in 8, whose feature is faint: a LinearSVC's 0 misses most of its
    documents, so cross-validation puts its threshold below 0; a label on half the documents,
    cleanly separated, keeps a threshold near 0, and a label on every document keeps 0."""
    from scipy.sparse import csr_matrix

    from hdc.train.ngram_linear import label_thresholds

    rng = np.random.default_rng(0)
    n = 400
    rare = (rng.random(n) < 0.125).astype(np.float32)
    half = (rng.random(n) < 0.5).astype(np.float32)
    noise = rng.random((n, 20))
    features = csr_matrix(np.column_stack([rare * rng.random(n) * 0.3 + noise[:, 0] * 0.3, half, noise]))
    targets = np.stack([rare, half, np.ones(n, np.float32)], 1)
    c, thresholds = label_thresholds(features, targets, (1.0,), balanced=False, folds=4, seed=0)
    assert c == 1.0 and thresholds[0] < -0.2 and abs(thresholds[1]) < 0.5 and thresholds[2] == 0
    c, thresholds = label_thresholds(features[:3], targets[:3], (1.0, 3.0), False, folds=4, seed=0)
    assert c == 1.0 and (thresholds == 0).all()  # fewer documents than folds


def test_label_thresholds_keep_the_c_that_cross_validates_best():
    """C = 1e-4 barely fits at all, so every threshold search on its scores is blind: C = 1,
    listed second, is kept."""
    from scipy.sparse import csr_matrix

    from hdc.train.ngram_linear import label_thresholds

    rng = np.random.default_rng(0)
    features = rng.random((200, 10))
    targets = (features[:, :2] > 0.6).astype(np.float32)
    c, _ = label_thresholds(csr_matrix(features), targets, (1e-4, 1.0), balanced=False, folds=4, seed=0)
    assert c == 1.0


def test_the_temperature_makes_validation_log_loss_least():
    from hdc.train.ngram_linear import fit_temperature

    rng = np.random.default_rng(0)
    targets = rng.integers(0, 3, 400)
    logits = np.eye(3)[targets] * 2.0 + rng.normal(0, 1, (400, 3))
    base = fit_temperature(logits, targets)
    assert 0.05 < base < 20 and abs(fit_temperature(logits * 5, targets) / base - 5) < 0.3  # 5x sharper: 5x cooler


def test_a_validation_split_with_no_error_fits_a_temperature_inside_the_grid_and_short_of_certainty():
    from scipy.special import softmax

    from hdc.train.ngram_linear import fit_temperature

    rng = np.random.default_rng(0)
    targets = rng.integers(0, 4, 300)
    logits = np.eye(4)[targets] * 3.0 + rng.normal(0, 0.3, (300, 4))  # every argmax right
    assert (logits.argmax(1) == targets).all()
    t = fit_temperature(logits, targets)
    confidence = softmax(logits / t, axis=1)[np.arange(300), targets].mean()
    assert 0.05 < t < 1  # sharper than the network, but not to the grid's end
    assert 0.98 < confidence < 1 - 1 / 302 + 1e-3  # about the accuracy 300 of 300 support


def test_choose_mix_keeps_the_network_alone_only_where_it_beats_every_mix():
    from hdc.train.ngram_linear import NETWORK_ALONE, choose_mix

    first, second = (0.0, "binary", 1.0, 3.0, "none", 2.0), (1.0, "binary", 1.0, 3.0, "none", 2.0)
    scored = [(0.5, (1.0, "binary", 1.0, 1.0, "none", 1.0)), (0.7, first), (0.7, second)]
    assert choose_mix(0.6, scored) == (0.7, first)  # the first of the best
    assert choose_mix(0.7, scored) == (0.7, first)  # a tie keeps the mix
    assert choose_mix(0.8, scored) == (0.8, NETWORK_ALONE)


def test_rechoose_drops_the_network_where_thresholded_linear_scores_alone_do_better():
    """Chosen with thresholds at 0, the network's weight 1 won; with the linear part's
    thresholds in place, the network only adds false positives of the rare label, so weight 0
    is chosen. On a tie the first pair stands."""
    from hdc.train.ngram_linear import rechoose

    targets = np.array([[1, 0], [1, 1], [0, 0], [1, 0]])
    linear = np.where(targets == 1, 1.0, -1.0)  # thresholded: every decision right
    network = np.array([[0.0, 3.0], [0.0, 0.0], [0.0, 3.0], [0.0, 3.0]])  # the rare label everywhere

    def score(z):
        return float(((z > 0) == (targets == 1)).mean())

    assert rechoose(score, network, linear, (1.0, 1.0), (1.0, 0.0), (1.0, 2.0)) == (1.0, 0.0, 1.0)
    assert rechoose(score, network, linear, (0.0, 2.0), (1.0, 0.0), (1.0, 2.0)) == (1.0, 0.0, 2.0)
