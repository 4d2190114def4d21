"""A plain, readable training loop with progress bars and held-out accuracy."""
from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .threat import chunks, require_eval

__all__ = ["fit", "predict", "accuracy", "require_eval", "random_shift", "random_crop_flip", "Recipe", "RECIPES",
           "register_recipe", "recipe", "soft_cross_entropy", "init_distributed", "distributed"]


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Predicted labels of ``x``, in memory-sized batches on the model's device."""
    dev = next(model.parameters()).device
    if len(x) == 0:
        return torch.zeros(0, dtype=torch.long, device=dev)
    return torch.cat([model(x[s].to(dev)).argmax(1) for s in chunks(len(x), 64 * x[0].numel())])


def accuracy(model: nn.Module, x, y: torch.Tensor | None = None) -> float:
    """Top-1 accuracy of ``model`` on inputs ``x`` and labels ``y`` (or on a dataset of ``(x, y)``)."""
    if y is None:
        x, y = x[:]
    if len(x) == 0:
        raise ValueError("accuracy of an empty set is undefined")
    return (predict(model, x).cpu() == y.cpu()).float().mean().item()


def fit(model: nn.Module, train, test=None, *, epochs: int, lr: float = 1e-3, batch_size: int = 128,
        weight_decay: float = 0.0, optimizer: str = "adam", schedule: str = "cosine",
        perturb: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        loss: Callable[..., torch.Tensor] | None = None, recipe: Recipe | None = None,
        seed: int | None = 0, device=None, progress: bool = True) -> dict[str, list[float]]:
    """Train ``model`` with cross-entropy on ``train`` (a dataset of ``(x, y)`` tensors).

    Each epoch shuffles with a generator seeded by ``seed``, takes mini-batches, and optionally
    replaces each batch by ``perturb(model, x, y)`` (e.g. Gaussian noise, or a PGD attack for
    adversarial training). ``loss(model, x, y, progress)`` replaces the cross-entropy of the logits
    (e.g. a certified-training loss); ``progress`` is the fraction of training done, in [0, 1), for
    schedules that ramp up a radius; a loss that takes an ``index`` argument also gets the positions
    of the batch in ``train`` (per-sample state, e.g. CAT's radii). ``recipe`` (a :class:`Recipe`,
    e.g. ``recipe("trades", eps=0.1)``) supplies both hooks. Returns the history: training loss and
    accuracy per epoch, and held-out accuracy on ``test`` when given. The model ends in eval mode.

    **Data parallel.** Started under ``torchrun`` with :func:`init_distributed` called first, every
    process takes its share of each mini-batch (the same seeded order everywhere), the model is
    wrapped in :class:`~torch.nn.parallel.DistributedDataParallel`, and each process's loss is
    weighted by its share, so the averaged gradient is the gradient of the whole mini-batch: the same
    training as one process, up to floating-point order and the hooks' own random draws.
    """
    if epochs < 1 or batch_size < 1 or lr <= 0:
        raise ValueError(f"need epochs >= 1, batch_size >= 1 and lr > 0; got {epochs}, {batch_size}, {lr}")
    if recipe is not None:
        if (perturb is not None and recipe.perturb is not None) or (loss is not None and recipe.loss is not None):
            raise ValueError(f"fit: recipe {recipe.name!r} already sets the hook that perturb= / loss= also sets; "
                             "pass one or the other")
        perturb, loss = perturb or recipe.perturb, loss or recipe.loss
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    model.to(dev)
    x_all, y_all = train[:]
    x_all, y_all = x_all.to(dev), y_all.to(dev)
    if y_all.dtype != torch.long or y_all.dim() != 1 or len(y_all) != len(x_all):
        raise ValueError(f"labels must be a 1-D int64 tensor with one label per input; got {y_all.dtype} "
                         f"{tuple(y_all.shape)} for {len(x_all)} inputs")
    with torch.no_grad():
        n_out = model.eval()(x_all[:1]).shape[1]
    if y_all.min() < 0 or y_all.max() >= n_out:
        raise ValueError(f"labels must lie in 0..{n_out - 1} (the model has {n_out} outputs); "
                         f"found {y_all.min().item()}..{y_all.max().item()}")
    indexed = loss is not None and "index" in inspect.signature(loss).parameters
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed() else (0, 1)
    net = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel
        net = DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
    params = [p for p in model.parameters() if p.requires_grad]
    if optimizer == "adam":
        opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    elif optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay, nesterov=True)
    else:
        raise ValueError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}")
    steps_per_epoch = -(-len(x_all) // batch_size)
    sched = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * steps_per_epoch)
             if schedule == "cosine" else None)
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    if seed is not None:
        torch.manual_seed(seed + rank)
    history: dict[str, list[float]] = {"loss": [], "train_acc": [], "test_acc": []}
    bar = tqdm(range(epochs), desc="training", disable=not progress or rank > 0, leave=False)
    for epoch in bar:
        net.train()
        order = torch.randperm(len(x_all), generator=gen).to(dev)
        total = torch.zeros(2, device=dev)  # summed loss, correct predictions
        for i in range(0, len(order), batch_size):
            batch = order[i:i + batch_size]
            idx = batch[rank::world]  # this process's share of the mini-batch
            x, y = x_all[idx], y_all[idx]
            if perturb is not None:
                x = perturb(net, x, y)
            done = (epoch * steps_per_epoch + i // batch_size) / (epochs * steps_per_epoch)
            if loss is None:
                logits = net(x)
                value = F.cross_entropy(logits, y)
            else:  # the hook makes its own forward passes; these logits only count the training accuracy
                with torch.no_grad():
                    logits = net(x)
                value = loss(net, x, y, done, index=idx) if indexed else loss(net, x, y, done)
            opt.zero_grad(set_to_none=True)
            (value * (len(idx) * world / len(batch))).backward()  # DDP averages: the mini-batch's mean
            opt.step()
            if sched is not None:
                sched.step()
            total += torch.stack([value.detach() * len(idx), (logits.argmax(1) == y).sum().float()])
        if world > 1:
            dist.all_reduce(total)
        model.eval()
        history["loss"].append(total[0].item() / len(x_all))
        history["train_acc"].append(total[1].item() / len(x_all))
        postfix = {"loss": f"{history['loss'][-1]:.3f}", "train": f"{history['train_acc'][-1]:.3f}"}
        if test is not None:
            history["test_acc"].append(accuracy(model, *test[:]))
            postfix["test"] = f"{history['test_acc'][-1]:.3f}"
        bar.set_postfix(postfix)
    model.eval()
    return history


def distributed() -> bool:
    """Whether this process is one of several in an initialised ``torch.distributed`` group."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def init_distributed() -> torch.device:
    """Join the process group that ``torchrun`` describes in the environment (``RANK``,
    ``WORLD_SIZE``, ``LOCAL_RANK``, ...): NCCL with one GPU per process where CUDA is available,
    gloo on CPUs. Returns this process's device. Outside torchrun (no ``WORLD_SIZE``) it does nothing
    and returns :func:`advlib.device`. ``torch.distributed.destroy_process_group()`` ends it."""
    from .runtime import device as default_device
    if "WORLD_SIZE" not in os.environ:
        return default_device()
    if not dist.is_available():
        raise RuntimeError("this PyTorch build has no torch.distributed; run in one process instead")
    cuda = torch.cuda.is_available()
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", 0))
        if local >= torch.cuda.device_count():
            raise RuntimeError(f"LOCAL_RANK {local} but only {torch.cuda.device_count()} GPUs: start torchrun with "
                               f"--nproc_per_node={torch.cuda.device_count()} or fewer")
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy ``-sum_k q_k log softmax(z)_k`` against soft labels ``q`` (rows of
    probabilities: label smoothing, mixup, SPROUT's and CAT's Dirichlet labels)."""
    return -(target * F.log_softmax(logits, 1)).sum(1).mean()


def random_shift(model: nn.Module, x: torch.Tensor, y: torch.Tensor, pad: int = 1) -> torch.Tensor:
    """Shift every image by up to ``pad`` pixels in each direction (zero fill): a random crop of
    the zero-padded image, as a ``perturb`` hook of :func:`fit`."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    i = torch.randint(0, 2 * pad + 1, (n,), device=x.device)
    j = torch.randint(0, 2 * pad + 1, (n,), device=x.device)
    rows = (i[:, None] + torch.arange(h, device=x.device))[:, :, None]  # n x h x 1
    cols = (j[:, None] + torch.arange(w, device=x.device))[:, None, :]  # n x 1 x w
    return padded[torch.arange(n, device=x.device)[:, None, None], :, rows, cols].permute(0, 3, 1, 2)


def random_crop_flip(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The standard CIFAR augmentation as a ``perturb`` hook: shifts of up to 4 pixels and a
    horizontal flip with probability 1/2 per image."""
    out = random_shift(model, x, y, pad=4)
    flip = torch.rand(len(x), device=x.device) < 0.5
    return torch.where(flip[:, None, None, None], out.flip(3), out)


# ------------------------------------------------------------------------------------ training recipes
@dataclass(frozen=True)
class Recipe:
    """How to train robustly, as the two hooks of :func:`fit`: ``perturb(model, x, y)`` replaces each
    batch (e.g. by adversarial examples), ``loss(model, x, y, progress[, index])`` replaces
    cross-entropy (e.g. TRADES' regularised loss, a certified-training loss). Either may be ``None``.
    ``fit(model, train, recipe=r)`` uses both. ``state`` holds what a recipe learns or tracks while it
    trains (SPROUT's Dirichlet parameter, CAT's per-sample radii), for inspection."""

    name: str
    perturb: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    loss: Callable[..., torch.Tensor] | None = None
    state: object = None


#: robust-training recipes by name: ``name -> factory(**params) -> Recipe``. The parts that own the
#: methods register them (:mod:`advlib.defenses`: adversarial training; certified training); the
#: zoo's entries name a recipe and its parameters.
RECIPES: dict[str, Callable[..., Recipe]] = {}


def register_recipe(name: str):
    """Decorator: register a recipe factory under ``name`` (an error if the name is taken)."""
    def add(factory: Callable[..., Recipe]) -> Callable[..., Recipe]:
        if name in RECIPES and RECIPES[name] is not factory:
            raise ValueError(f"a training recipe named {name!r} is already registered ({RECIPES[name]})")
        RECIPES[name] = factory
        return factory
    return add


def recipe(name: str, **params) -> Recipe:
    """The registered recipe ``name`` with its parameters, e.g. ``recipe("pgd", eps=0.1)``."""
    if name not in RECIPES:
        raise ValueError(f"unknown training recipe {name!r}; registered: {sorted(RECIPES)} "
                         "(import advlib registers the library's own)")
    return RECIPES[name](**params)

