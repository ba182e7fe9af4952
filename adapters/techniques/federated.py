"""Federated learning on simulated clients, through Flower (``flwr``): the clients' private corpora never leave them.

``federated.fedavg`` is FedAvg (McMahan et al., 2017, "Communication-Efficient Learning of Deep Networks from
Decentralized Data") of LoRA adapters, or FedProx (Li et al., 2020) with ``proximal_mu > 0``: every round the selected
clients start from the global adapter, train it on their partition, and send it back; the server replaces the global
adapter by the example-weighted average. ``federated.distill`` is federated distillation (Jeong et al., 2018, "FD";
the server side as in FedDF, Lin et al., 2020): each client fine-tunes its own adapter on its partition and shares only
its logits on a public set; the server averages them and distills the average into the global model (``kd_loss``).

What runs in Flower: a ``ServerApp`` and a ``ClientApp`` (``@app.train()``) exchanging Flower ``Message``s of
``ArrayRecord`` / ``MetricRecord`` / ``ConfigRecord`` through an in-process ``Grid`` (no network port, no Ray: the
grid calls the ``ClientApp`` directly, one client after another, and counts the array bytes it carries); Flower's
message-based ``FedAvg`` / ``FedProx`` strategy samples the clients (``fraction_train``), drives the rounds
(``Strategy.start``) and computes the example-weighted average (``aggregate_arrayrecords``, also used to average the
logits of ``federated.distill``). Flower's ``run_simulation`` is not used: its only backend is Ray, pinned to a
version this project does not use.

Partitions (``partition``): ``iid`` shuffles the texts (seeded) into near-equal parts; ``dirichlet`` gives every text
a label (the ``partition_key`` field of dict records, else the text's first word hashed with the seed into
``n_labels`` buckets: the synthetic corpus's templates start differently, so this is a topic skew) and splits each
label's texts over the clients by proportions drawn from Dirichlet(``dirichlet_alpha``) (Hsu et al., 2019; small
alpha: each client sees few labels); ``replicate`` gives every client the whole corpus (a control: FedAvg of
identical clients is centralized LoRA). The last texts of the corpus (enough for ``eval_blocks`` blocks) are held out
for the global model's validation loss and never reach a client.
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from adapters.corpus import record_text, resolve_records
from adapters.errors import MissingDependencyError, UsageError
from adapters.handle import ModelHandle
from adapters.technique import Applied, TechniqueContext, technique
from adapters.techniques._training import (
    batches,
    causal_lm_loss,
    copied_model,
    finite,
    seeded,
    step_budget,
    token_blocks,
    train,
    trainable_counts,
)
from adapters.techniques.distill import kd_loss
from adapters.techniques.peft_lora import (
    DEFAULT_TARGETS,
    _WeightTraining,
    lora_model,
    reapply_masks,
    zero_masks,
)

Partition = Literal["iid", "dirichlet", "replicate"]
INSTALL = "pip install -e '.[federated]' && pip install --no-deps flwr==1.42.0"


@dataclass(frozen=True)
class FederatedParams:
    """The parameters both federated techniques share.

    Attributes:
        clients: simulated clients (Flower nodes).
        rounds: communication rounds.
        local_steps: optimizer steps of each selected client per round; None uses the spec's ``max_steps``, else 10.
        client_fraction: share of the clients the strategy samples each round (at least one).
        partition: ``iid``, ``dirichlet`` (label skew) or ``replicate`` (every client holds the whole corpus).
        dirichlet_alpha: concentration of the Dirichlet label proportions (smaller: more skew).
        partition_key: the field of dict records that is a text's label for ``dirichlet`` (None: the first word of
            the text, hashed with the seed into ``n_labels`` buckets).
        n_labels: buckets of the hashed labels.
        dataset: a named dataset of the spec; None: the upstream ``data.*`` output or the synthetic corpus.
        n_texts: texts read from it (held-out ones included).
        seq_len: tokens per block.
        batch_size: blocks per step.
        lr: peak AdamW learning rate of the clients.
        r, alpha, dropout, target_modules: the LoRA adapters (as ``peft.lora``).
        eval_blocks: held-out blocks of the global model's validation loss (0: no validation).
        keep_sparsity: after merging, set weights that were exactly zero in the input back to zero.
    """

    clients: int = 4
    rounds: int = 3
    local_steps: int | None = None
    client_fraction: float = 1.0
    partition: Partition = "iid"
    dirichlet_alpha: float = 0.5
    partition_key: str | None = None
    n_labels: int = 8
    dataset: str | None = None
    n_texts: int = 1000
    seq_len: int = 128
    batch_size: int = 4
    lr: float = 2e-4
    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: tuple[str, ...] = DEFAULT_TARGETS
    eval_blocks: int = 8
    keep_sparsity: bool = True

    def __post_init__(self) -> None:
        for name in ("clients", "rounds", "n_labels", "n_texts", "seq_len", "batch_size", "r"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.seq_len < 2:
            raise ValueError(f"seq_len must be >= 2, got {self.seq_len}")
        if self.local_steps is not None and self.local_steps < 1:
            raise ValueError(f"local_steps must be >= 1, got {self.local_steps}")
        if not 0 < self.client_fraction <= 1:
            raise ValueError(f"client_fraction must be in (0, 1], got {self.client_fraction}")
        if self.partition not in ("iid", "dirichlet", "replicate"):
            raise ValueError(f"partition must be iid, dirichlet or replicate, got {self.partition!r}")
        if self.dirichlet_alpha <= 0:
            raise ValueError(f"dirichlet_alpha must be > 0, got {self.dirichlet_alpha}")
        if not 0 < self.lr < 1:
            raise ValueError(f"lr must be in (0, 1), got {self.lr}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.eval_blocks < 0:
            raise ValueError(f"eval_blocks must be >= 0, got {self.eval_blocks}")
        if not self.target_modules:
            raise ValueError("target_modules must name at least one module")


@dataclass(frozen=True)
class FedAvgParams(FederatedParams):
    """Params of ``federated.fedavg`` (the shared ones in :class:`FederatedParams`).

    Attributes:
        proximal_mu: FedProx's proximal weight: each client adds mu/2 ||w - w_global||^2 to its loss (0: FedAvg).
    """

    proximal_mu: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.proximal_mu < 0:
            raise ValueError(f"proximal_mu must be >= 0, got {self.proximal_mu}")


@dataclass(frozen=True)
class FedDistillParams(FederatedParams):
    """Params of ``federated.distill`` (the shared ones in :class:`FederatedParams`; ``rounds`` defaults to 1).

    Attributes:
        public: the public (unlabeled) dataset every client predicts on: a dataset of the spec or a builtin one;
            None: the synthetic corpus under another seed (disjoint from the private texts).
        public_blocks: public blocks of ``seq_len`` tokens.
        distill_steps: the server's distillation steps per round; None uses the spec's ``max_steps``, else 20.
        distill_lr: their peak learning rate.
        temperature: the distillation temperature.
    """

    rounds: int = 1
    public: str | None = None
    public_blocks: int = 8
    distill_steps: int | None = None
    distill_lr: float = 1e-3
    temperature: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("public_blocks", "distill_steps"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.distill_lr < 1:
            raise ValueError(f"distill_lr must be in (0, 1), got {self.distill_lr}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")


@dataclass(frozen=True)
class RoundRecord:
    """One communication round.

    Attributes:
        round: 1-based round number.
        clients: the clients the strategy selected (0-based partition ids).
        bytes_down: tensor bytes the server sent (the global adapter to each selected client; 0 for distillation).
        bytes_up: tensor bytes the clients sent (their adapters, or their logits on the public set).
        train_loss: the clients' last local training loss, example-weighted (Flower's metric aggregation).
        val_loss: the global model's mean next-token loss on the held-out blocks after the round (None: none held out).
        kl_before: (distillation) mean per-token KL(averaged clients || global) on the public set before the
            server's distillation.
        kl_after: the same after it.
    """

    round: int
    clients: tuple[int, ...]
    bytes_down: int
    bytes_up: int
    train_loss: float | None
    val_loss: float | None
    kl_before: float | None = None
    kl_after: float | None = None


@dataclass(frozen=True)
class FederatedReport:
    """What a federated technique did.

    Attributes:
        strategy: the Flower strategy (``FedAvg``, ``FedProx``) and the flwr version.
        partition: the partition scheme.
        client_examples: training blocks per client (the weights of the averages).
        rounds: one record per round.
        local_steps: optimizer steps per client per round.
        adapter_bytes: tensor bytes of one adapter (what FedAvg sends per client, each way).
        bytes_up: all bytes the clients sent.
        bytes_down: all bytes the server sent.
        fedavg_bytes: what FedAvg of the adapters would send over the same rounds and selections (up + down).
        model_bytes: tensor bytes of the full model (what FedAvg of all weights would send per client, each way).
        val_loss_before: the global model's held-out loss before round 1.
        val_loss_after: after the last round.
        trainable_params: adapter parameters.
        total_params: parameters of the adapted model.
        sparsity_kept: whether weights that were zero in the input were kept at zero.
    """

    strategy: str
    partition: str
    client_examples: tuple[int, ...]
    rounds: tuple[RoundRecord, ...]
    local_steps: int
    adapter_bytes: int
    bytes_up: int
    bytes_down: int
    fedavg_bytes: int
    model_bytes: int
    val_loss_before: float | None
    val_loss_after: float | None
    trainable_params: int
    total_params: int
    sparsity_kept: bool


# -- data: held-out blocks and client partitions ----------------------------------------------------------------
class FederatedData(NamedTuple):
    """The corpus split for a federation.

    Attributes:
        client_texts: each client's private texts.
        eval_blocks: held-out token blocks of the global validation loss.
    """

    client_texts: list[list[str]]
    eval_blocks: list[list[int]]


def held_out(tokenizer: Any, texts: list[str], eval_blocks: int, seq_len: int) -> tuple[list[str], list[list[int]]]:
    """(the texts left for the clients, ``eval_blocks`` blocks cut from the last texts of the corpus)."""
    if eval_blocks == 0:
        return texts, []
    need, tokens, cut = eval_blocks * seq_len, 0, len(texts)
    while cut > 0 and tokens < need:
        cut -= 1
        tokens += len(tokenizer(texts[cut], add_special_tokens=False).input_ids) + 1
    if cut == 0 or tokens < need:
        raise UsageError(f"eval_blocks {eval_blocks} x seq_len {seq_len} tokens would hold out the whole corpus: "
                         "lower eval_blocks or raise n_texts")
    return texts[:cut], token_blocks(tokenizer, texts[cut:], seq_len)[:eval_blocks]


def text_labels(records: list[Any], key: str | None, n_labels: int, seed: int) -> list[str]:
    """Each record's label for a Dirichlet partition: ``record[key]`` of dict records, else the first word of its
    text hashed with the seed into ``n_labels`` buckets."""
    if key is not None:
        missing = [i for i, r in enumerate(records) if not isinstance(r, dict) or key not in r]
        if missing:
            raise UsageError(f"partition_key {key!r} is not a field of record {missing[0]} of the dataset")
        return [str(r[key]) for r in records]
    labels = []
    for r in records:
        words = record_text(r).split()
        digest = hashlib.blake2b(f"{seed}:{words[0] if words else ''}".encode(), digest_size=8).digest()
        labels.append(str(int.from_bytes(digest, "little") % n_labels))
    return labels


def partition_indices(n: int, clients: int, scheme: str, seed: int, labels: list[str] | None = None,
                      alpha: float = 0.5) -> list[list[int]]:
    """Which of ``n`` items each client holds (each client's indices ascending), seeded.

    ``iid``: a permutation cut into near-equal parts; ``replicate``: every item to every client; ``dirichlet``: each
    label's items (shuffled) cut by proportions drawn from Dirichlet(alpha, ..., alpha) over the clients, redrawn
    (up to 100 times) until every client holds at least one item.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    if scheme == "replicate":
        return [list(range(n)) for _ in range(clients)]
    if n < clients:
        raise UsageError(f"{n} texts cannot be split over {clients} clients: raise n_texts or lower clients")
    if scheme == "iid":
        return [sorted(int(i) for i in part) for part in np.array_split(rng.permutation(n), clients)]
    assert labels is not None and len(labels) == n
    by_label: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        by_label.setdefault(label, []).append(i)
    for _ in range(100):
        parts: list[list[int]] = [[] for _ in range(clients)]
        for label in sorted(by_label):
            items = rng.permutation(by_label[label])
            cuts = (np.cumsum(rng.dirichlet([alpha] * clients)) * len(items)).astype(int)[:-1]
            for client, chunk in enumerate(np.split(items, cuts)):
                parts[client].extend(int(i) for i in chunk)
        if all(parts):
            return [sorted(p) for p in parts]
    raise UsageError(f"a Dirichlet({alpha}) partition left a client without texts 100 times: raise dirichlet_alpha "
                     "or n_texts, or lower clients")


def federated_data(tokenizer: Any, records: list[Any], p: FederatedParams, seed: int) -> FederatedData:
    """Hold out the validation blocks, then partition the remaining records over the clients."""
    texts = [record_text(r) for r in records]
    kept, evals = held_out(tokenizer, texts, p.eval_blocks, p.seq_len)
    records = records[: len(kept)]
    labels = text_labels(records, p.partition_key, p.n_labels, seed) if p.partition == "dirichlet" else None
    parts = partition_indices(len(kept), p.clients, p.partition, seed, labels, p.dirichlet_alpha)
    return FederatedData([[kept[i] for i in part] for part in parts], evals)


# -- adapters as plain tensors --------------------------------------------------------------------------------
def adapter_state(model: Any) -> dict[str, Any]:
    """A detached copy of every trainable (adapter) tensor, by parameter name."""
    return {n: w.detach().clone() for n, w in model.named_parameters() if w.requires_grad}


def load_adapter(model: Any, state: dict[str, Any]) -> None:
    import torch

    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in state.items():
            params[name].copy_(value)


def tensor_bytes(state: dict[str, Any]) -> int:
    return sum(t.numel() * t.element_size() for t in state.values())


def local_train(model: Any, blocks: list[list[int]], steps: int, p: FederatedParams, seed: int,
                anchor: dict[str, Any] | None = None, mu: float = 0.0) -> float | None:
    """Train the loaded adapter on ``blocks`` for ``steps`` (as ``peft.lora`` does: AdamW, warm-up, cosine), with
    FedProx's mu/2 ||w - anchor||^2 when ``mu > 0``; returns the last step's loss."""
    loss_fn: Callable[[Any, Any], Any] = causal_lm_loss
    if mu > 0 and anchor is not None:
        params = [(w, anchor[n]) for n, w in model.named_parameters() if w.requires_grad]

        def loss_fn(m: Any, ids: Any) -> Any:
            prox = sum(((w - a.to(w.device)) ** 2).sum() for w, a in params)
            return causal_lm_loss(m, ids) + 0.5 * mu * prox

    with seeded(seed):
        result = train(model, batches(blocks, p.batch_size, seed), steps, loss_fn, lr=p.lr, warmup=min(10, steps // 10))
    return finite(result.final_loss)


def validation_loss(model: Any, blocks: list[list[int]], batch_size: int) -> float | None:
    """Mean next-token loss over the held-out ``blocks`` (None when there are none)."""
    import torch

    if not blocks:
        return None
    device = next(model.parameters()).device
    total = 0.0
    with torch.no_grad():
        for i in range(0, len(blocks), batch_size):
            chunk = blocks[i : i + batch_size]
            ids = torch.tensor(chunk, device=device)
            total += float(model(input_ids=ids, labels=ids).loss) * len(chunk)
    return total / len(blocks)


# -- Flower, in process ---------------------------------------------------------------------------------------
def _flower() -> Any:
    try:
        import flwr
        import flwr.clientapp
        import flwr.serverapp.strategy  # noqa: F401 - the parts used; each imports more of flwr's dependencies
    except ImportError as exc:
        raise MissingDependencyError("flwr", "federated.*", INSTALL) from exc
    return flwr


@contextmanager
def flower_session(seed: int) -> Iterator[None]:
    """Flower silenced (its logger and the deprecation warnings it emits), its process-wide task identity set for
    an in-process run (the ServerApp's node), and Python's ``random`` (Flower's client sampling) seeded; all
    restored afterwards."""
    import warnings

    from flwr.common.constant import SUPERLINK_NODE_ID
    from flwr.supercore.task_identity import TaskIdentity

    logger = logging.getLogger("flwr")
    disabled, saved = logger.disabled, (TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id)
    state = random.getstate()
    logger.disabled = True
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, SUPERLINK_NODE_ID
    random.seed(seed)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.disabled = disabled
        TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id = saved
        random.setstate(state)


class Exchange(NamedTuple):
    """One ``send_and_receive`` of the in-process grid."""

    clients: tuple[int, ...]
    bytes_down: int
    bytes_up: int


def array_bytes(content: Any) -> int:
    """Tensor bytes of every ``ArrayRecord`` in a message's content."""
    return sum(a.numpy().nbytes for rec in content.array_records.values() for a in rec.values())


def local_grid(client_app: Any, clients: int) -> Any:
    """A Flower ``Grid`` whose nodes are ``clients`` in-process runs of ``client_app`` (node ``1000 + i`` holds
    partition ``i``): ``send_and_receive`` calls the app on each message in turn and logs the array bytes both ways
    (``grid.exchanges``)."""
    from flwr.app import Context, RecordDict
    from flwr.serverapp import Grid
    from flwr.supercore.run import Run

    class LocalGrid(Grid):
        def __init__(self) -> None:
            self._run = Run.create_empty(1)
            self.exchanges: list[Exchange] = []
            self.contexts = {1000 + i: Context(run_id=1, node_id=1000 + i, state=RecordDict(), run_config={},
                                               node_config={"partition-id": i, "num-partitions": clients})
                             for i in range(clients)}

        def set_run(self, run: Any) -> None:
            self._run = run

        @property
        def run(self) -> Any:
            return self._run

        def create_message(self, content: Any, message_type: str, dst_node_id: int, group_id: str,
                           ttl: float | None = None) -> Any:
            from flwr.app import Message

            return Message(content=content, dst_node_id=dst_node_id, message_type=message_type, group_id=group_id,
                           ttl=ttl)

        def get_node_ids(self) -> list[int]:
            return list(self.contexts)

        def push_messages(self, messages: Any) -> list[str]:
            raise NotImplementedError("the in-process grid only answers send_and_receive")

        def pull_messages(self, message_ids: Any) -> list[Any]:
            raise NotImplementedError("the in-process grid only answers send_and_receive")

        def send_and_receive(self, messages: Any, *, timeout: float | None = None) -> list[Any]:
            replies, down, up, nodes = [], 0, 0, []
            for n, msg in enumerate(messages):
                msg.metadata.__dict__["_message_id"] = f"{len(self.exchanges)}-{n}"  # as Flower's InMemoryGrid does
                node = msg.metadata.dst_node_id
                reply = client_app(msg, self.contexts[node])
                down, up = down + array_bytes(msg.content), up + array_bytes(reply.content)
                nodes.append(node - 1000)
                replies.append(reply)
            if nodes:
                self.exchanges.append(Exchange(tuple(sorted(nodes)), down, up))
            return replies

    return LocalGrid()


def flower_strategy(p: FederatedParams, proximal_mu: float = 0.0) -> Any:
    """Flower's message-based FedAvg (FedProx with ``proximal_mu``): ``client_fraction`` of the clients per round
    (at least one), no client-side evaluation (the server evaluates the global model itself)."""
    from flwr.serverapp.strategy import FedAvg, FedProx

    if proximal_mu > 0:
        return FedProx(fraction_train=p.client_fraction, fraction_evaluate=0.0, min_train_nodes=1,
                       min_available_nodes=p.clients, proximal_mu=proximal_mu)
    return FedAvg(fraction_train=p.client_fraction, fraction_evaluate=0.0, min_train_nodes=1,
                  min_available_nodes=p.clients)


def _reply(msg: Any, arrays: dict[str, Any], examples: int, loss: float | None) -> Any:
    from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict

    metrics: dict[str, Any] = {"num-examples": examples, "train_loss": float("nan") if loss is None else loss}
    return Message(content=RecordDict({"arrays": ArrayRecord(torch_state_dict=arrays),
                                       "metrics": MetricRecord(metrics)}), reply_to=msg)


# -- the shared setup ------------------------------------------------------------------------------------------
class Setup(NamedTuple):
    """A federation ready to run: the adapted model (LoRA on a float copy), the clients' blocks, the held-out
    blocks, the input's zero masks and the per-round local step budget."""

    model: Any
    client_blocks: list[list[list[int]]]
    eval_blocks: list[list[int]]
    masks: dict[str, Any]
    local_steps: int


def setup(handle: ModelHandle, ctx: TechniqueContext, p: FederatedParams) -> Setup:
    handle.activate()
    base = copied_model(handle)
    masks = zero_masks(base) if p.keep_sparsity else {}
    data = federated_data(handle.tokenizer, resolve_records(ctx, p.dataset, p.n_texts), p, ctx.seed)
    blocks = [token_blocks(handle.tokenizer, texts, p.seq_len) for texts in data.client_texts]
    with seeded(ctx.seed):
        model = lora_model(base, p)
    return Setup(model, blocks, data.eval_blocks, masks, step_budget(p.local_steps, ctx, 10))


def finished(s: Setup, state: dict[str, Any]) -> Any:
    """The model with the adapter ``state`` merged into its weights (and the input's zeros kept)."""
    load_adapter(s.model, state)
    merged = s.model.merge_and_unload()
    reapply_masks(merged, s.masks)
    merged.eval()
    return merged


def model_bytes(model: Any) -> int:
    seen: set[int] = set()
    total = 0
    for w in model.parameters():
        if id(w) not in seen and not w.requires_grad:
            seen.add(id(w))
            total += w.numel() * w.element_size()
    return total


@technique("federated.fedavg")
class FedAvg(_WeightTraining):
    """FedAvg / FedProx of LoRA adapters over simulated clients on Flower, merged into the weights at the end."""

    Params = FedAvgParams
    requires = ("flwr", "peft", "torch", "transformers")

    def apply(self, handle: ModelHandle, ctx: TechniqueContext) -> Applied:
        p = self.params
        flwr = _flower()
        from flwr.app import ArrayRecord, Context, MetricRecord, RecordDict
        from flwr.clientapp import ClientApp
        from flwr.serverapp import ServerApp

        s = setup(handle, ctx, p)
        client_app, server_app = ClientApp(), ServerApp()

        @client_app.train()
        def fit(msg: Any, context: Any) -> Any:
            i = int(context.node_config["partition-id"])
            anchor = msg.content["arrays"].to_torch_state_dict()
            config = msg.content["config"]
            load_adapter(s.model, anchor)
            loss = local_train(s.model, s.client_blocks[i], s.local_steps, p, ctx.seed + int(config["server-round"]) - 1,
                               anchor, float(config.get("proximal-mu", 0.0)))
            ctx.progress.update(int(config["server-round"]), p.rounds, f"client {i}")
            return _reply(msg, adapter_state(s.model), len(s.client_blocks[i]), loss)

        def evaluate(server_round: int, arrays: Any) -> Any:
            load_adapter(s.model, arrays.to_torch_state_dict())
            loss = validation_loss(s.model, s.eval_blocks, p.batch_size)
            return None if loss is None else MetricRecord({"val_loss": loss})

        initial = adapter_state(s.model)
        results: list[Any] = []
        strategies: list[Any] = []

        @server_app.main()
        def main(grid: Any, context: Any) -> None:
            strategy = flower_strategy(p, p.proximal_mu)
            strategies.append(strategy)
            results.append(strategy.start(grid=grid, initial_arrays=ArrayRecord(torch_state_dict=initial),
                                          num_rounds=p.rounds, evaluate_fn=evaluate))

        grid = local_grid(client_app, p.clients)
        with flower_session(ctx.seed):
            server_app(grid, Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config={}))
        result, strategy = results[0], strategies[0]
        rounds = _rounds(grid.exchanges, result.train_metrics_clientapp, result.evaluate_metrics_serverapp)
        trainable, total = trainable_counts(s.model)
        size = tensor_bytes(initial)
        up, down = sum(r.bytes_up for r in rounds), sum(r.bytes_down for r in rounds)
        report = FederatedReport(
            f"{type(strategy).__name__} (flwr {flwr.__version__})", p.partition,
            tuple(len(b) for b in s.client_blocks), rounds, s.local_steps, size, up, down, up + down,
            model_bytes(s.model), _metric(result.evaluate_metrics_serverapp.get(0), "val_loss"),
            rounds[-1].val_loss, trainable, total, bool(s.masks))
        return Applied(handle.derive(model=finished(s, result.arrays.to_torch_state_dict())), report)


def _metric(record: Any, key: str) -> float | None:
    return None if record is None or key not in record else finite(record[key])


def _rounds(exchanges: list[Exchange], train_metrics: dict[int, Any], eval_metrics: dict[int, Any]) -> tuple[RoundRecord, ...]:
    return tuple(RoundRecord(r, x.clients, x.bytes_down, x.bytes_up, _metric(train_metrics.get(r), "train_loss"),
                             _metric(eval_metrics.get(r), "val_loss"))
                 for r, x in enumerate(exchanges, start=1))


# -- federated distillation ------------------------------------------------------------------------------------
def public_blocks(handle: ModelHandle, ctx: TechniqueContext, p: FedDistillParams) -> list[list[int]]:
    """The public set's token blocks: the planner's ``public`` input, else a dataset of ``ctx.datasets``, else a
    builtin dataset, else (``public: None``) the synthetic corpus under seed + 1."""
    from adapters.corpus import BUILTIN_DATASETS, builtin_records, synthetic_corpus

    n = p.public_blocks * 8  # texts: the synthetic ones are ~20 tokens, so this is ample for 128-token blocks
    if "public" in ctx.inputs:
        records = list(ctx.inputs["public"])
    elif p.public is None:
        records = list(synthetic_corpus(n, seed=ctx.seed + 1))
    elif p.public in ctx.datasets:
        records = list(ctx.datasets[p.public])
    elif p.public in BUILTIN_DATASETS:
        records = builtin_records(p.public, n, seed=ctx.seed + 1)
    else:
        raise UsageError(f"unknown public dataset {p.public!r} (defined: {', '.join(sorted(ctx.datasets)) or 'none'}; "
                         f"builtin: {', '.join(BUILTIN_DATASETS)})")
    return token_blocks(handle.tokenizer, [record_text(r) for r in records], p.seq_len)[: p.public_blocks]


def predictions(model: Any, blocks: list[list[int]], batch_size: int) -> Any:
    """The model's logits on ``blocks`` (float32, on the CPU: what a client uploads)."""
    import torch

    device = next(model.parameters()).device
    out = []
    with torch.no_grad():
        for i in range(0, len(blocks), batch_size):
            out.append(model(input_ids=torch.tensor(blocks[i : i + batch_size], device=device)).logits.float().cpu())
    return torch.cat(out)


def mean_kd(model: Any, ids: Any, teacher: Any, batch_size: int) -> float:
    """Mean per-token KL(teacher || model) at temperature 1 over ``ids`` against stored teacher logits."""
    import torch

    total = 0.0
    with torch.no_grad():
        for i in range(0, len(ids), batch_size):
            logits = model(input_ids=ids[i : i + batch_size]).logits
            total += float(kd_loss(logits, teacher[i : i + batch_size].to(logits.device), 1.0)) * len(ids[i : i + batch_size])
    return total / len(ids)


def distill_into(model: Any, ids: Any, teacher: Any, p: FedDistillParams, seed: int, steps: int) -> None:
    """Train the loaded (global) adapter for ``steps`` with ``kd_loss`` against the averaged logits."""
    def loss_fn(m: Any, index: Any) -> Any:
        rows = index[:, 0].cpu()
        return kd_loss(m(input_ids=ids[rows].to(index.device)).logits, teacher[rows].to(index.device), p.temperature)

    with seeded(seed):
        train(model, batches([[i] for i in range(len(ids))], p.batch_size, seed), steps, loss_fn,
              lr=p.distill_lr, warmup=min(10, steps // 10))


@technique("federated.distill")
class FedDistill(_WeightTraining):
    """Federated distillation on Flower: clients share logits on a public set, never weights; the server distills
    their example-weighted average into the global model (adapters merged at the end)."""

    Params = FedDistillParams
    requires = ("flwr", "peft", "torch", "transformers")
    dataset_params = ("public",)

    def apply(self, handle: ModelHandle, ctx: TechniqueContext) -> Applied:
        import torch

        p = self.params
        flwr = _flower()
        from flwr.app import ArrayRecord, ConfigRecord
        from flwr.clientapp import ClientApp

        s = setup(handle, ctx, p)
        public = torch.tensor(public_blocks(handle, ctx, p))
        initial = adapter_state(s.model)
        locals_ = [dict(initial) for _ in range(p.clients)]  # each client's own adapter, kept across rounds (FD)
        client_app = ClientApp()

        @client_app.train()
        def fit(msg: Any, context: Any) -> Any:
            i, rnd = int(context.node_config["partition-id"]), int(msg.content["config"]["server-round"])
            load_adapter(s.model, locals_[i])
            loss = local_train(s.model, s.client_blocks[i], s.local_steps, p, ctx.seed + rnd - 1)
            locals_[i] = adapter_state(s.model)
            ctx.progress.update(rnd, p.rounds, f"client {i}")
            return _reply(msg, {"logits": predictions(s.model, public.tolist(), p.batch_size)}, len(s.client_blocks[i]),
                          loss)

        grid = local_grid(client_app, p.clients)
        glob = initial
        load_adapter(s.model, glob)
        val_before = validation_loss(s.model, s.eval_blocks, p.batch_size)
        rounds, fedavg_bytes = [], 0
        with flower_session(ctx.seed):
            strategy = flower_strategy(p)
            for rnd in range(1, p.rounds + 1):
                replies = grid.send_and_receive(strategy.configure_train(rnd, ArrayRecord(), ConfigRecord(), grid))
                averaged, metrics = strategy.aggregate_train(rnd, replies)
                teacher = averaged.to_torch_state_dict()["logits"]
                load_adapter(s.model, glob)
                kl_before = mean_kd(s.model, public, teacher, p.batch_size)
                distill_into(s.model, public, teacher, p, ctx.seed + rnd - 1, step_budget(p.distill_steps, ctx, 20))
                kl_after = mean_kd(s.model, public, teacher, p.batch_size)
                glob = adapter_state(s.model)
                x = grid.exchanges[-1]
                rounds.append(RoundRecord(rnd, x.clients, x.bytes_down, x.bytes_up, _metric(metrics, "train_loss"),
                                          validation_loss(s.model, s.eval_blocks, p.batch_size), kl_before, kl_after))
                fedavg_bytes += 2 * tensor_bytes(initial) * len(x.clients)
        trainable, total = trainable_counts(s.model)
        up = sum(r.bytes_up for r in rounds)
        report = FederatedReport(
            f"federated distillation, logits averaged by Flower's {type(strategy).__name__} (flwr {flwr.__version__})",
            p.partition, tuple(len(b) for b in s.client_blocks), tuple(rounds), s.local_steps, tensor_bytes(initial), up,
            0, fedavg_bytes, model_bytes(s.model), val_before, rounds[-1].val_loss, trainable, total, bool(s.masks))
        return Applied(handle.derive(model=finished(s, glob)), report)

