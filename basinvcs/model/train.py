"""Training inside the basin: any substrate's module whose only free parameters are the chart
coordinates.

`BasinModel` holds θ0 fixed and computes, on every forward,

    θ_t = θ0_t + β(depth_t) · (P z)_t

for every tensor t the chart projects, then runs the substrate's module (our GPT, or any
transformers model) on those weights with `torch.func.functional_call`, with whatever positional
and keyword inputs the module takes. P z comes from `projection.offset_fn`: one decode forward, one
encode backward (its exact adjoint), so a step costs about two passes over the projected weights
and nothing of size N × d is ever formed. The trainable parameters are z (d values) and, if asked,
the β coefficients: what the optimiser sees is exactly what a basin packet can hold.

`commit_model_in_basin` writes the packet straight from `model.z` (no weights on disk). Packets
store z as float24 (numeric.py), so it first rounds z in place onto that grid (`snap_`): the
committed basin, checked out again, then reproduces the trained model up to float32 rounding.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Generic, Protocol, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from .. import numeric, porcelain
from ..cid import CID
from ..errors import SchemaError
from ..objects import Basin, Chart, Entanglement, SubstrateRef
from ..repository import Repository
from .projection import Projection, offset_fn, projected_specs
from .substrate import Substrate
from .tasks import Batch

B = TypeVar("B")


class BasinModel(nn.Module):
    """A substrate's module reparametrised by basin coordinates: θ = θ0 + β(depth)·P z.

    `projection` may be passed to share one `Projection(chart, substrate.specs)` between models:
    building one computes the chart's Gram correction (a few seconds at d = 1024). Train and eval
    modes reach the module (dropout in an `hf` model follows them).
    """

    def __init__(
        self,
        substrate: Substrate,
        chart: Chart,
        z: torch.Tensor | Sequence[float] | None = None,
        beta: Sequence[float] = (1.0,),
        *,
        train_beta: bool = False,
        projection: Projection | None = None,
    ) -> None:
        super().__init__()
        if projection is None:
            projection = Projection(chart, substrate.specs)
        elif projection.chart != chart or projection.specs != projected_specs(
            chart, substrate.specs
        ):
            raise SchemaError("projection was built for another chart or substrate")
        if not beta or not all(math.isfinite(b) for b in beta):
            raise SchemaError("beta needs at least one finite coefficient")
        self.substrate = substrate
        self.chart = chart
        self.projection = projection
        self._offset = offset_fn(projection)
        start = torch.zeros(chart.dim) if z is None else torch.as_tensor(z).detach().clone()
        if start.shape != (chart.dim,) or not torch.isfinite(start).all():
            raise SchemaError(
                f"z must be {chart.dim} finite values, got shape {tuple(start.shape)}"
            )
        self.z = nn.Parameter(start.to(torch.float32))
        coeffs = torch.tensor(list(beta), dtype=torch.float64)
        if train_beta:
            self.beta = nn.Parameter(coeffs)
        else:
            self.register_buffer("beta", coeffs)
        self.specs = projection.specs  # the tensors z moves, in the substrate's order
        depths = torch.tensor([s.depth for s in self.specs], dtype=torch.float64)
        # Not persistent: a state_dict then holds only z and β, i.e. what a basin packet holds.
        powers = depths[:, None] ** torch.arange(len(beta))
        self.register_buffer("depth_powers", powers, persistent=False)
        theta0 = torch.cat([substrate.theta0(s).reshape(-1) for s in self.specs])
        self.register_buffer("theta0", theta0, persistent=False)
        # The module, set past nn.Module's registration so its parameters never reach an
        # optimiser: functional_call supplies every projected weight. A module built on the meta
        # device (gpt) also needs the tensors the chart leaves out, at θ0.
        net = substrate.skeleton().requires_grad_(False)  # only z (and β) take gradients
        object.__setattr__(self, "net", net)
        on_meta = {n for n, t in net.state_dict(keep_vars=True).items() if t.is_meta}
        moved = {s.name for s in self.specs}
        self._fixed = {
            s.name: substrate.theta0(s)
            for s in substrate.specs
            if s.name in on_meta and s.name not in moved
        }

    @classmethod
    def from_basin(
        cls,
        substrate: Substrate,
        basin: Basin,
        *,
        train_beta: bool = False,
        projection: Projection | None = None,
    ) -> BasinModel:
        """Start from a packet's coordinates and β (e.g. HEAD's basin, to continue training)."""
        return cls(
            substrate,
            basin.chart,
            torch.tensor(basin.z, dtype=torch.float32),
            basin.beta,
            train_beta=train_beta,
            projection=projection,
        )

    def scales(self) -> torch.Tensor:
        """β(depth_t) for every tensor t, float64 (differentiable in β when β is trained)."""
        return self.depth_powers @ self.beta

    def weights(self) -> dict[str, torch.Tensor]:
        """θ0 + β·P z for every projected tensor (and θ0 for the fixed tensors the module lacks),
        under the substrate's tensor names."""
        device = self.theta0.device
        offset = self._offset(self.z.cpu()).to(device)  # the projection runs on the CPU
        sizes = [s.numel for s in self.specs]
        scales = self.scales().to(device, self.theta0.dtype)
        out = {name: t.to(device) for name, t in self._fixed.items()}
        for i, (spec, base, off) in enumerate(
            zip(self.specs, self.theta0.split(sizes), offset.split(sizes), strict=True)
        ):
            out[spec.name] = (base + scales[i] * off).view(spec.shape)
        return out

    def forward(self, *args, **kwargs):
        """The module's output on these inputs, exactly as `substrate.build()` loaded with
        `weights()` gives it (logits for our GPT; a transformers output object for `hf`)."""
        return torch.func.functional_call(self.net, self.weights(), args, kwargs)

    def train(self, mode: bool = True) -> BasinModel:
        super().train(mode)
        self.net.train(mode)
        return self

    def beta_values(self) -> tuple[float, ...]:
        return tuple(float(b) for b in self.beta.detach().cpu())

    def offset_norm_sq(self) -> float:
        """‖β·P z‖², the squared size of the change this model makes to θ0."""
        with torch.no_grad():
            offset = self._offset(self.z.detach().cpu()).double()
            sizes = [s.numel for s in self.specs]
            return math.fsum(
                float(s) ** 2 * float(o.square().sum())
                for s, o in zip(self.scales().cpu(), offset.split(sizes), strict=True)
            )

    @torch.no_grad()
    def snap_(self) -> BasinModel:
        """Round z in place to the float24 values a basin packet stores (relative error ≤ 2^-16).

        After this, `to_basin(model)` holds exactly `model.z`, so the packet decodes to this model.
        """
        stored = numeric.quantize(self.z.detach().cpu().tolist())
        self.z.copy_(torch.tensor(stored, dtype=torch.float32))
        return self


def batch_loss(model: nn.Module, batch: Batch) -> torch.Tensor:
    """Mean cross-entropy over the answer positions of a batch (the mask), nothing else."""
    inputs, targets, mask = batch
    logits = logits_of(model(inputs))
    return F.cross_entropy(logits[mask], targets[mask])


def fisher_diagonal(
    model: BasinModel,
    batches: Iterable[B],
    loss_fn: Callable[[BasinModel, B], torch.Tensor] = batch_loss,
) -> torch.Tensor:
    """Empirical Fisher diagonal over z: F_i = (1/K) Σ_k (∂L_k/∂z_i)², float64, shape (d,).

    L_k = loss_fn(model, batch_k) is the mean loss of batch k (the default: cross-entropy on its
    answer tokens), and the gradient is taken at the model's current z. With one example per batch
    this is the textbook empirical Fisher (squared per-example score, on the data's labels, not
    labels sampled from the model); larger batches average the scores before squaring, which drops
    part of the per-example variance, so compare Fisher diagonals computed with the same batch
    size. Only relative values matter to merges and distances. For these classical models (a
    probability distribution over next tokens, i.e. a pure state with real amplitudes √p) the
    quantum Fisher information reduces exactly to this classical Fisher information.
    """
    total = torch.zeros(model.chart.dim, dtype=torch.float64)
    count = 0
    for batch in batches:
        (grad,) = torch.autograd.grad(loss_fn(model, batch), model.z)
        total += grad.detach().cpu().double().square()
        count += 1
    if not count:
        raise ValueError("fisher_diagonal needs at least one batch")
    return total / count


class Batches(Protocol[B]):
    """Anything that draws training batches: our byte tasks, the text tasks, your own data."""

    def batch(self, size: int, generator: torch.Generator) -> B: ...


class Anchor(Generic[B]):
    """Keeps what a model computes on unrelated inputs near what it computed when training
    began: `loss(model)` is weight × mean ‖f(x) − f₀(x)‖² / mean ‖f₀(x)‖² over a batch of
    `inputs`, f the `features` function and f₀ its values at the model as given here.

    Why: a specialist trained on its task alone moves the base wherever that task's loss goes,
    and two such moves undo each other when added. Anchored on generic inputs (for text, random
    words: `texttasks.generic_sentences`), each specialist changes little besides its skill, and
    merges that add the changes (`add`) keep the skills (docs/results.md, "Skill transfer on a
    pretrained base"). Each step costs one more forward and backward pass on `batch` inputs.
    """

    def __init__(
        self,
        model: BasinModel,
        inputs: Sequence[B],
        features: Callable[[BasinModel, Sequence[B]], torch.Tensor],
        weight: float,
        *,
        batch: int = 32,
        seed: int = 0,
        chunk: int = 64,
    ) -> None:
        if not (math.isfinite(weight) and weight >= 0):
            raise SchemaError(f"anchor weight {weight!r} must be a finite number >= 0")
        if not inputs or batch < 1:
            raise SchemaError("an anchor needs inputs and a batch of at least 1")
        self.inputs, self.features, self.weight, self.batch = list(inputs), features, weight, batch
        self.generator = torch.Generator().manual_seed(seed)
        was_training = model.training
        model.eval()
        with torch.no_grad():
            self.reference = torch.cat(
                [features(model, self.inputs[i : i + chunk]) for i in range(0, len(inputs), chunk)]
            )
        model.train(was_training)
        self.scale = float(self.reference.pow(2).sum(1).mean())
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise SchemaError("the anchor's reference features are zero or not finite")

    def loss(self, model: BasinModel) -> torch.Tensor:
        picks = torch.randint(len(self.inputs), (self.batch,), generator=self.generator).tolist()
        now = self.features(model, [self.inputs[i] for i in picks])
        drift = (now - self.reference[picks]).pow(2).sum(1).mean() / self.scale
        return self.weight * drift


def train(
    model: BasinModel,
    task: Batches[B],
    steps: int,
    lr: float,
    batch_size: int,
    seed: int,
    *,
    loss_fn: Callable[[BasinModel, B], torch.Tensor] | None = None,
    weight_decay: float = 0.0,
    anchor: Anchor | None = None,
) -> list[float]:
    """Adam (one learning rate) on the model's trainable parameters: z, and β when trained;
    AdamW, with decoupled `weight_decay` pulling them towards 0, where that is given.

    Batches come from `task.batch(batch_size, generator)` with a generator seeded with `seed`, so
    the same model, task and arguments give the same losses. `loss_fn(model, batch)` defaults to
    `batch_loss` (answer-token cross-entropy of the byte tasks, batch tensors moved to the model's
    device); an `anchor` adds its loss to every step's. The model is in train mode while it runs
    and in eval mode after. A progress bar shows on a terminal. Returns the task loss of every
    step (the anchor's not included).
    """
    from ..progress import progress_bar

    if not (math.isfinite(weight_decay) and weight_decay >= 0):
        raise SchemaError(f"weight decay {weight_decay!r} must be a finite number >= 0")
    gen = torch.Generator().manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = (
        torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
        if weight_decay
        else torch.optim.Adam(params, lr=lr)
    )
    device = model.theta0.device
    if loss_fn is None:

        def loss_fn(m: BasinModel, batch: Batch) -> torch.Tensor:
            return batch_loss(m, tuple(t.to(device) for t in batch))

    losses: list[float] = []
    model.train()
    try:
        with progress_bar(steps, "train", unit="steps") as update:
            for _ in range(steps):
                loss = loss_fn(model, task.batch(batch_size, gen))
                opt.zero_grad(set_to_none=True)
                (loss if anchor is None else loss + anchor.loss(model)).backward()
                opt.step()
                losses.append(loss.item())
                update(1)
    finally:
        model.eval()
    return losses


def logits_of(output: object) -> torch.Tensor:
    """The logits of a module's output: a tensor as it is, `.logits` of a transformers output,
    or the first element of a tuple."""
    if isinstance(output, torch.Tensor):
        return output
    if (logits := getattr(output, "logits", None)) is not None:
        return logits
    if isinstance(output, tuple) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise TypeError(f"cannot find logits in a {type(output).__name__}")


def to_basin(
    model: BasinModel,
    *,
    fisher: Sequence[float] | torch.Tensor | None = None,
    labels: Sequence[str] = (),
    entanglements: Sequence[Entanglement] = (),
    substrate_ref: SubstrateRef | None = None,
) -> Basin:
    """The packet of the model's coordinates and β, z rounded to float24 as the packet stores it
    (call `model.snap_()` first for the model to be exactly what the packet decodes to).

    The substrate reference defaults to the model's own substrate.
    """
    if substrate_ref is None:
        substrate_ref = SubstrateRef(
            model.substrate.name, model.substrate.fingerprint, model.substrate.num_params
        )
    return Basin.create(
        model.chart,
        model.z.detach().cpu().tolist(),
        fisher=_floats(fisher),
        beta=model.beta_values(),
        entanglements=entanglements,
        labels=labels,
        substrate=substrate_ref,
    )


def commit_model_in_basin(
    repo: Repository,
    model: BasinModel,
    message: str,
    fisher: Sequence[float] | torch.Tensor | None = None,
) -> CID:
    """Commit the model's basin on the current branch, straight from `model.z`.

    This calls `model.snap_()` first: z is rounded in place to the packet's float24 grid, so the
    commit checked out again reproduces the model as it now is. Labels and entanglements come from
    HEAD's basin, as `bridge.commit_tensors` does. Metrics: "captured" = ‖β·P z_stored‖² /
    ‖β·P z‖² with z as trained (1 up to float24 rounding), and "z_norm" = ‖z_stored‖.
    """
    if model.chart != repo.config.chart:
        raise SchemaError(f"model chart {model.chart} differs from the repository's")
    trained_sq = model.offset_norm_sq()
    model.snap_()
    stored_sq = model.offset_norm_sq()
    head = repo.read_basin(repo.read_commit(repo.head_commit()).basin)
    basin = to_basin(model, fisher=fisher, labels=head.labels, entanglements=head.entanglements)
    metrics = {
        "captured": stored_sq / trained_sq if trained_sq else 1.0,
        "z_norm": basin.norm(),
    }
    return porcelain.commit(repo, basin, message, metrics=metrics)


def _floats(values: Sequence[float] | torch.Tensor | None) -> list[float] | None:
    if values is None:
        return None
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().double().tolist()
    return list(values)
