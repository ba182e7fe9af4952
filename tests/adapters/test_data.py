"""data.perplexity_filter: keeps the fraction a reference model finds most (or least) likely."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from adapters.corpus import synthetic_corpus
from adapters.errors import UsageError
from adapters.technique import TechniqueContext, build_params, get_technique
from adapters.techniques.data import perplexities, selected


def _filter(params, texts, reference, tmp_path):
    cls = get_technique("data.perplexity_filter")
    technique = cls(build_params(cls, params))
    kept, report = technique.select(texts, TechniqueContext(workdir=tmp_path, inputs={"reference": reference}))
    return kept, dataclasses.asdict(report)


def test_selected_keeps_the_fraction_in_order():
    scores = [5.0, 1.0, 3.0, 1.0, 9.0, 2.0]
    assert selected(scores, 0.5, "lowest") == [1, 3, 5]
    assert selected(scores, 0.5, "highest") == [0, 2, 4]
    assert selected(scores, 0.01, "lowest") == [1]  # at least one text, ties broken by position


def test_perplexity_matches_a_direct_forward(tiny_handle):
    text = "Ada Alder lives in Ashford, a town on the river Avon."
    ids = tiny_handle.tokenizer(text, add_special_tokens=False).input_ids
    tok = tiny_handle.tokenizer
    prefix = [tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id]  # lm-eval's prefix token
    with torch.no_grad():
        logits = tiny_handle.model(torch.tensor([prefix + ids])).logits[0, :-1]
    nll = torch.nn.functional.cross_entropy(logits, torch.tensor(ids), reduction="mean")
    (ppl,) = perplexities(tiny_handle, [text])
    assert ppl == pytest.approx(math.exp(float(nll)), rel=1e-3)


@pytest.mark.parametrize("mode", ["lowest", "highest"])
def test_filter_keeps_the_chosen_side(mode, tiny_handle, tmp_path):
    texts = synthetic_corpus(12, seed=1) + ["zq xv jj 9182 ((( kk", "qqq zzz !!! 000 ###"]
    kept, report = _filter({"keep": 0.5, "mode": mode}, texts, tiny_handle, tmp_path)
    scores = dict(zip(texts, perplexities(tiny_handle, texts), strict=True))
    dropped = [t for t in texts if t not in kept]
    assert len(kept) == 7 and kept == [t for t in texts if t in kept]  # original order
    if mode == "lowest":
        assert max(scores[t] for t in kept) <= min(scores[t] for t in dropped)
        assert report["mean_ppl_kept"] < report["mean_ppl_dropped"]
    else:
        assert min(scores[t] for t in kept) >= max(scores[t] for t in dropped)
    again, _ = _filter({"keep": 0.5, "mode": mode}, texts, tiny_handle, tmp_path)
    assert again == kept


def test_reference_is_required(tmp_path):
    cls = get_technique("data.perplexity_filter")
    with pytest.raises(UsageError, match="needs a reference model"):
        cls(build_params(cls, {})).select(["a text"], TechniqueContext(workdir=tmp_path))


@pytest.mark.parametrize("raw, fragment", [
    ({"keep": 0}, "keep must be in (0, 1], got 0"),
    ({"keep": 1.2}, "keep must be in (0, 1], got 1.2"),
    ({"mode": "median"}, "'median' is not allowed"),
])
def test_bad_params_are_usage_errors(raw, fragment):
    with pytest.raises(UsageError) as info:
        build_params(get_technique("data.perplexity_filter"), raw)
    assert fragment in str(info.value)


@pytest.mark.slow
def test_smollm2_filtered_wikitext_has_lower_perplexity(smollm2, benchmarks_dir, tmp_path):
    from adapters.corpus import read_texts

    lines = [t for t in read_texts(benchmarks_dir / "wikitext2" / "wiki.test.raw", min_chars=40)
             if not t.startswith("=")][:40]
    kept, report = _filter({"keep": 0.25}, lines, smollm2, tmp_path)
    assert len(kept) == 10
    dropped = [t for t in lines if t not in kept]

    def mean_ppl(texts):  # recomputed with a direct forward pass, independent of the filter's own scoring
        out = []
        for t in texts:
            ids = torch.tensor([smollm2.tokenizer(t).input_ids[:256]])
            with torch.no_grad():
                out.append(math.exp(float(smollm2.model(input_ids=ids, labels=ids).loss)))
        return sum(out) / len(out)

    kept_ppl, dropped_ppl = mean_ppl(kept), mean_ppl(dropped)
    print(f"wikitext-2 lines: kept {len(kept)} mean ppl {kept_ppl:.1f}, dropped {len(dropped)} mean ppl {dropped_ppl:.1f}; "
          f"filter's own: {report['mean_ppl_kept']:.1f} / {report['mean_ppl_dropped']:.1f}")
    assert kept_ppl < dropped_ppl
