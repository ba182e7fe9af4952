"""Test plugin (loaded through ``SLM_PLUGINS``): a technique that fails on purpose, a cheap
weight-changing technique and a cheap real suite, for harness mechanics tests."""

from __future__ import annotations

import copy
from dataclasses import dataclass

from adapters.handle import LineageStep
from adapters.technique import Technique, technique
from suites.base import Metric, SampleRecord, Suite, SuiteResult, mean_stderr, suite


@dataclass(frozen=True)
class FailParams:
    message: str = "boom"


@dataclass(frozen=True)
class NoiseParams:
    scale: float = 0.01

    def __post_init__(self):
        if not 0 <= self.scale <= 1:
            raise ValueError(f"scale must be in [0, 1], got {self.scale}")


@technique("prune.test_fail")
class FailTechnique(Technique):
    """Raises during apply (tests failure isolation)."""

    Params = FailParams

    def apply(self, handle, ctx):
        raise RuntimeError(self.params.message)


@technique("tune.test_noise")
class NoiseTechnique(Technique):
    """Adds seeded Gaussian noise to every weight (a cheap weight-changing step for harness tests)."""

    Params = NoiseParams

    def apply(self, handle, ctx):
        import torch

        model = copy.deepcopy(handle.model)
        gen = torch.Generator().manual_seed(ctx.seed)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=gen) * self.params.scale)
        return handle.derive(LineageStep(self.name, self.version, {"scale": self.params.scale}), model=model)


@dataclass(frozen=True)
class AverageParams:
    weight: float = 0.5


@technique("merge.test_average")
class AverageTechnique(Technique):
    """Interpolates the model's weights with the mean of the ``models`` it is given (a list input, in order)."""

    Params = AverageParams
    inputs = ("models",)
    list_inputs = ("models",)
    uses_seed = False

    def apply(self, handle, ctx):
        import torch

        others = ctx.inputs["models"]
        model = copy.deepcopy(handle.model)
        with torch.no_grad():
            for name, p in model.named_parameters():
                mean = sum(dict(o.model.named_parameters())[name] for o in others) / len(others)
                p.mul_(1 - self.params.weight).add_(mean * self.params.weight)
        return handle.derive(model=model)


@dataclass(frozen=True)
class ReadParams:
    dataset: str | None = None


@technique("tune.test_read")
class ReadTechnique(Technique):
    """Reports the first records of its dataset (what the harness handed it) and leaves the weights alone."""

    Params = ReadParams
    uses_seed = False

    def apply(self, handle, ctx):
        from adapters.corpus import resolve_records
        from adapters.technique import Applied

        records = resolve_records(ctx, self.params.dataset, 100)
        return Applied(handle.derive(model=copy.deepcopy(handle.model)), {"n": len(records), "first": records[0]})


@technique("tune.test_noisy")
class NoisyTechnique(Technique):
    """Leaves the weights alone and makes the noise libraries make: a Python warning, a library logger's warning,
    a progress bar and a git error on stderr, a print on stdout (tests that the console stays clean)."""

    Params = ReadParams
    uses_seed = False

    def apply(self, handle, ctx):
        import logging
        import sys
        import warnings

        warnings.warn("torch.ao.quantization is deprecated (a test warning)", FutureWarning, stacklevel=1)
        warnings.warn("a user warning from a library (test)", UserWarning, stacklevel=1)
        logging.getLogger("datasets.test").warning("Warning: a library logger's warning (test)")
        sys.stderr.write("Tokenizing inputs: 100%|##########| 3/3 [00:00<00:00, 99.0it/s]\n")
        sys.stderr.write("fatal: not a git repository (or any of the parent directories): .git\n")
        print("a library's print (test)")
        return handle.derive(model=copy.deepcopy(handle.model))


@suite("test_nll")
class NllSuite(Suite):
    """Mean negative log-likelihood per token of three fixed sentences (cheap, real)."""

    def run(self, handle, ctx):
        texts = ["the cat sat on the mat", "a river runs through the town", "bread is made from flour"]
        lls = handle.loglikelihood_rolling(texts)
        per = [-ll / len(handle.tokenizer(t).input_ids) for ll, t in zip(lls, texts, strict=True)]
        mean, se = mean_stderr(per)
        return SuiteResult(
            metrics=[Metric("test_nll", "fixed3", "nll", mean, se, len(per), "nats/token", False,
                            "loglikelihood_rolling")],
            samples=[SampleRecord("test_nll", "fixed3", str(i), None, x) for i, x in enumerate(per)],
        )
