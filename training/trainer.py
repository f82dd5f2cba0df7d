"""The training loop: warm-up, guided network iterations and, for CLIP-LIT / Latent, alternating prompt rounds.

Compared with the reference structure (§6.1) this loop: encodes whole batches through CLIP (one pass gives
the embedding and the identity maps), computes the input's features under no_grad, runs the network and
CLIP under bf16 autocast where the hardware has it, augments on the device, keeps the training set in
memory, encodes each image's augmented views for the prompt stages once (not every pass in loader workers),
and produces each round's results I_t once, in memory, from an in-memory copy of the round's best weights
(the reference re-enhances the whole set to disk at every "best" event, and its "best" is only a reference
to the live model).

What is written: ``workdir/state.pt`` every ``checkpoint_every`` steps and at phase ends (loaded back with
``weights_only=True``), from which an interrupted run resumes; the returned network is the *final* one.
A non-finite loss stops training with :class:`TrainingError`; the last good checkpoint is left as it was.
"""
from __future__ import annotations

import copy
import math
import sys
import time
from collections import deque
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from backlitfix.io.atomic import atomic_write
from backlitfix.model.network import EnhanceNet

from .data import Augment, ImageSet

STATE_FILE = "state.pt"
EPS = 1e-9  # Ĩ = clamp(I / (L + 1e-9), 0, 1), as the reference trains


class TrainingError(RuntimeError):
    """Training cannot go on; ``str()`` is the user-facing message."""


@dataclass
class TrainSettings:
    steps: int = 2000  # guided network iterations (after the warm-up)
    warmup_steps: int = 0
    batch_size: int = 8
    image_size: int = 512
    lr: float = 2e-5
    weight_decay: float = 1e-3  # coupled L2, as the reference's Adam
    checkpoint_every: int = 100
    seed: int = 1143
    device: str = "cpu"
    precision: str = "auto"  # auto | fp32 | bf16 | fp16
    # CLIP-LIT / Latent only
    prompt_init_steps: int = 0
    round_steps: int = 500
    refine_steps: int = 250
    views: int = 4
    pair_lr: float = 5e-6
    pair_batch: int = 16
    view_size: int = 256


@dataclass
class History:
    """Per-step losses, by phase, kept in the checkpoint so a resumed run draws one continuous curve."""

    steps: list[int] = field(default_factory=list)
    phases: list[str] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, step: int, phase: str, loss: float):
        self.steps.append(step)
        self.phases.append(phase)
        self.losses.append(loss)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """bf16 where the CPU has AMX/avx512_bf16 (the inference rule), fp16 on CUDA, else full precision."""
    from backlitfix.enhance import pick_dtype

    dtype = pick_dtype(precision, device)
    return None if dtype == torch.float32 else dtype


def native_bf16() -> bool:
    """The CPU computes bf16 natively (avx512_bf16 / AMX): oneDNN's test, the one inference uses."""
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def memory_layout(device: torch.device, amp: torch.dtype | None) -> torch.memory_format:
    """NHWC where it is the fast convolution layout: CUDA, and oneDNN's bf16 kernels (they halve a CPU step
    here); in fp32 on CPU channels-last measured 1.4-1.7x slower than the default layout on AVX2 (issue 17)."""
    if device.type == "cuda" or amp == torch.bfloat16:
        return torch.channels_last
    return torch.contiguous_format


def duration(seconds: float) -> str:
    """'about 1 h 05 min' / '12 min' / '40 s': the precision an estimate deserves."""
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


class Estimate:
    """The run's total time, measured from its first steps: the first step of each kind (one-off allocations,
    oneDNN kernel choice) is left out, the next ``STEPS`` are averaged; told once, when the network steps are
    measured (CLIP-LIT's prompt steps are cheap and come first). Not counted: CLIP-LIT's once-per-round
    encoding of the training set's views and results."""

    STEPS = 3

    def __init__(self, start: int):
        self.start = start  # iterations done before this run (a resumed run)
        self.times: dict[bool, list[float]] = {True: [], False: []}
        self.skipped: set[bool] = set()
        self.told: set[bool] = set()
        self.total: float | None = None  # the estimate told, in seconds, to compare with the real time

    def add(self, is_net: bool, seconds: float) -> None:
        if is_net not in self.skipped:
            self.skipped.add(is_net)
            return
        if len(self.times[is_net]) < self.STEPS:
            self.times[is_net].append(seconds)

    def ready(self, is_net: bool) -> bool:
        if is_net in self.told or len(self.times[is_net]) < self.STEPS:
            return False
        self.told.add(is_net)
        return is_net  # network steps dominate: say it once they are measured

    def per_step(self, is_net: bool) -> float | None:
        t = self.times[is_net]
        return sum(t) / len(t) if t else None

    def seconds_left(self, trainer: Trainer) -> float:
        net, pair = trainer.remaining()
        t_net, t_pair = self.per_step(True) or 0.0, self.per_step(False) or 0.0
        return net * t_net + pair * t_pair

    def message(self, trainer: Trainer) -> str:
        total = trainer.total_iterations
        left = self.seconds_left(trainer)
        self.total = trainer.history.seconds + left
        return (f"estimate: about {duration(trainer.history.seconds + left)} for {total} steps on this machine "
                f"({self.per_step(True):.2f} s per network step, measured; {duration(left)} to go)")


def init_weights(net: torch.nn.Module, generator: torch.Generator) -> None:
    """The reference's weights_init (§5.3): conv weights ~ N(0, 0.02), biases untouched."""
    for m in net.modules():
        if "Conv" in type(m).__name__:
            with torch.no_grad():
                m.weight.copy_(torch.randn(m.weight.shape, generator=generator) * 0.02)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = F.mse_loss(a.float(), b.float()).clamp_min(1e-10)
    return float(10 * torch.log10(1.0 / mse))


class Trainer:
    """Runs one training job. ``objective`` is a guidance.ClipObjective or anything with ``loss`` (and
    optionally ``warmup_loss``, ``pair``); ``welllit`` is needed by CLIP-LIT / Latent for their prompt stages."""

    def __init__(self, net: EnhanceNet, objective, backlit: ImageSet, settings: TrainSettings, workdir: Path,
                 *, welllit: ImageSet | None = None, log=None, progress: bool | None = None):
        self.s = settings
        self.device = torch.device(settings.device)
        self.amp = autocast_dtype(settings.precision, self.device)
        self.layout = memory_layout(self.device, self.amp)
        self.net = net.to(self.device).to(memory_format=self.layout).train()
        self.objective = objective
        self.backlit = backlit
        self.welllit = welllit
        self.workdir = Path(workdir)
        self.log = log or (lambda m: print(m, file=sys.stderr))
        self.progress = sys.stderr.isatty() if progress is None else progress
        if self.amp == torch.bfloat16 and self.device.type == "cpu" and not native_bf16():
            self.log("warning: this CPU has no native bf16 (avx512_bf16/AMX): bf16 training runs several times "
                     "slower than fp32 here; use --precision auto or fp32")
        # fp16 (CUDA) gradients underflow without loss scaling; bf16 has fp32's range and needs none
        self.scaler = torch.amp.GradScaler(self.device.type) if self.amp == torch.float16 else None
        self.gen = torch.Generator().manual_seed(settings.seed)
        self.augment = Augment()
        self.pair = getattr(objective, "pair", None)
        self.history = History()
        self.step = 0  # network steps done, warm-up included
        self.pair_step = 0  # prompt steps done (stage A, then refinement)
        self.round = 0
        self.best = None  # in-memory copy of the current round's best weights (see module docstring)
        self.results: list[dict] = []  # state dicts whose outputs are I_t (newest last), at most two
        self._opt_net = self._new_net_optimizer()
        self._opt_pair = (torch.optim.Adam(self.pair.parameters(), lr=settings.pair_lr, weight_decay=1e-3)
                          if self.pair is not None else None)
        self._views: dict[str, torch.Tensor] = {}
        self._psnr_buf = deque([0.0] * 30, maxlen=30)  # warm-up PSNR(I, Ĩ), for the collapse guard
        self._since_init = 0  # warm-up steps since the network was (re)initialised
        self._loss_buf: deque[float] = deque(maxlen=30)  # -loss of the last guided steps, for "best"
        self._best_score = -math.inf
        self._draws: torch.Tensor | None = None

    # -- schedule -------------------------------------------------------------------------------------------

    @property
    def total_steps(self) -> int:
        return self.s.warmup_steps + self.s.steps

    @property
    def total_iterations(self) -> int:
        """Every iteration of the run, network and prompt phases together (what progress counts)."""
        return sum(n for _, n in self.plan())

    def plan(self) -> list[tuple[str, int]]:
        """The phases in order with their lengths: ("init", n), ("warmup", n), then ("enhance", n) /
        ("refine", n) rounds for pair methods, or one ("enhance", steps) for the others."""
        phases = []
        if self.pair is not None and self.s.prompt_init_steps:
            phases.append(("init", self.s.prompt_init_steps))
        if self.s.warmup_steps:
            phases.append(("warmup", self.s.warmup_steps))
        left = self.s.steps
        if self.pair is None:
            return phases + [("enhance", left)]
        while left > 0:
            n = min(self.s.round_steps, left)
            phases.append(("enhance", n))
            left -= n
            if left > 0 and self.s.refine_steps:
                phases.append(("refine", self.s.refine_steps))
        return phases

    # -- the loop -------------------------------------------------------------------------------------------

    def run(self, resume: bool = True) -> EnhanceNet:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if resume and (self.workdir / STATE_FILE).exists():
            self._load()
            self.log(f"resuming from {self.workdir / STATE_FILE}: step {self.step}/{self.total_steps}")
        t0 = time.perf_counter() - self.history.seconds
        self.estimate = Estimate(self.step + self.pair_step)  # attribute set per run
        bar = self._bar()
        # The plan is read again at every step: the collapse guard lengthens the warm-up while it runs, and a
        # resumed run must see the length the interrupted one had reached (else it stops short or trains on).
        i, net_start, pair_start = 0, 0, 0  # phase index; where it starts on the network / prompt counters
        while i < len(self.plan()):
            phase = self.plan()[i][0]
            is_net = phase in ("warmup", "enhance")
            start = net_start if is_net else pair_start
            done = lambda: (self.step if is_net else self.pair_step) - start  # noqa: E731, B023 - called in this iteration only
            if done() < self.plan()[i][1]:
                if phase == "enhance" and done() <= 0:
                    self._start_round()
                if phase == "refine" and self.pair is not None:
                    self._prepare_refinement()
                while done() < self.plan()[i][1]:
                    t_step = time.perf_counter()
                    loss, parts = self._net_step(phase) if is_net else self._pair_step(phase)
                    if not math.isfinite(loss):
                        bar and bar.close()
                        last = self.workdir / STATE_FILE
                        kept = (f"the last good checkpoint is kept in {last}" if last.exists()
                                else "no checkpoint was written yet")
                        raise TrainingError(f"{phase} loss became {loss} at step "
                                            f"{self.step if is_net else self.pair_step}; training stopped ({kept}). "
                                            f"Try a lower learning rate or --precision fp32.")
                    now = time.perf_counter()
                    self.history.seconds = now - t0
                    self.estimate.add(is_net, now - t_step)
                    if self.estimate.ready(is_net):
                        self.log(self.estimate.message(self))
                    self._report(bar, phase, loss, parts)
                    if is_net and self.step % self.s.checkpoint_every == 0:
                        self.save_state()
                if phase == "enhance":
                    self._end_round()
                self.save_state()
            if is_net:
                net_start += self.plan()[i][1]
            else:
                pair_start += self.plan()[i][1]
            i += 1
        bar and bar.close()
        self.history.seconds = time.perf_counter() - t0
        return self.net

    def remaining(self) -> tuple[int, int]:
        """Network and prompt iterations still to run, by the current plan."""
        net = sum(n for p, n in self.plan() if p in ("warmup", "enhance"))
        pair = sum(n for p, n in self.plan() if p not in ("warmup", "enhance"))
        return max(0, net - self.step), max(0, pair - self.pair_step)

    def _net_step(self, phase: str) -> tuple[float, dict]:
        idx = torch.randint(len(self.backlit), (min(self.s.batch_size, len(self.backlit)),), generator=self.gen)
        x = self.backlit.batch(idx, self.device)
        x = self.augment.apply(x, self.augment.draw(len(idx), self.gen)).contiguous(memory_format=self.layout)
        with self._autocast():
            L = self.net(x)
            enhanced = (x / (L.float() + EPS)).clamp(0, 1)
            if phase == "warmup" and hasattr(self.objective, "warmup_loss"):
                loss, parts = self.objective.warmup_loss(enhanced, x)
            else:
                loss, parts = self.objective.loss(enhanced, x, L, self.step)
        value = loss.detach().item()
        if not math.isfinite(value):
            return value, parts
        self._opt_net.zero_grad(set_to_none=True)
        if self.scaler is None:
            loss.backward()
            self._opt_net.step()
        else:
            self.scaler.scale(loss).backward()
            self.scaler.step(self._opt_net)
            self.scaler.update()
        self.step += 1
        self.history.add(self.step, phase, value)
        if phase == "warmup":
            self._collapse_guard(psnr(enhanced.detach(), x))
        else:
            self._track_best(value)
        return value, parts

    # -- warm-up collapse guard (§5.3) ----------------------------------------------------------------------

    COLLAPSE_AFTER = 100  # warm-up steps since the last (re)initialisation before the guard may act (§5.3)
    COLLAPSE_EXTEND = 100  # warm-up steps added by each restart

    def _collapse_guard(self, value: float) -> None:
        """While warming up, a 30-step mean PSNR(I, Ĩ) under 8 dB after 100 steps means the network has
        collapsed (e.g. L → 0): re-initialise it with a fresh optimiser and extend the warm-up by 100 steps
        (run() reads the plan at every step, so the extension is trained)."""
        buf = self._psnr_buf
        buf.append(value)
        self._since_init += 1
        if sum(buf) / 30 < 8 and self._since_init > self.COLLAPSE_AFTER:
            init_weights(self.net, self.gen)
            self._opt_net = self._new_net_optimizer()
            self._since_init = 0
            self.s.warmup_steps += self.COLLAPSE_EXTEND
            self.log(f"warm-up collapsed (mean PSNR {sum(buf) / 30:.1f} dB): network re-initialised, "
                     f"warm-up extended to {self.s.warmup_steps} steps")

    def _track_best(self, loss: float) -> None:
        buf = self._loss_buf
        buf.append(-loss)
        if self.step % 20 == 0 and len(buf) == buf.maxlen:
            score = sum(buf) / len(buf)
            if score > self._best_score:
                self._best_score = score
                self.best = copy.deepcopy(self.net.state_dict())

    def _start_round(self) -> None:
        self.round += 1
        self._best_score = -math.inf
        self.best = None

    def _end_round(self) -> None:
        if self.pair is None:
            return
        state = self.best if self.best is not None else self.net.state_dict()
        self.results = (self.results + [copy.deepcopy(state)])[-2:]

    # -- the prompt / latent pair ---------------------------------------------------------------------------

    def _pair_step(self, phase: str) -> tuple[float, dict]:
        from .guidance import backlit_score, pair_init_loss, ranking_loss

        B = self.s.pair_batch
        self._ensure_views()
        v_b, v_w = self._views["backlit"], self._views["welllit"]
        k = torch.randint(v_b.shape[1], (B,), generator=self.gen)
        vec = self.pair.vectors()
        temperature = getattr(self.objective, "temperature", 100.0)
        if phase == "init":  # backlit ∪ well-lit features with labels 0 / 1
            nb = B // 2
            ib = torch.randint(len(v_b), (nb,), generator=self.gen)
            iw = torch.randint(len(v_w), (B - nb,), generator=self.gen)
            emb = torch.cat([v_b[ib, k[:nb]], v_w[iw, k[nb:]]])
            labels = torch.cat([torch.zeros(nb), torch.ones(B - nb)]).long().to(emb.device)
            loss = pair_init_loss(emb, labels, vec, temperature)
        else:
            i = torch.randint(len(v_b), (B,), generator=self.gen)
            j = torch.randint(len(v_w), (B,), generator=self.gen)
            s = [backlit_score(v[idx, k], vec, temperature) for v, idx in ((v_b, i), (v_w, j))]
            res = [backlit_score(self._views[name][i, k], vec, temperature)
                   for name in ("new", "old") if name in self._views]
            loss = ranking_loss(s[0], s[1], *(res + [None, None])[:2], order=getattr(self.objective, "order", "paper"))
        value = loss.detach().item()
        if not math.isfinite(value):
            return value, {}
        self._opt_pair.zero_grad(set_to_none=True)
        loss.backward()
        self._opt_pair.step()
        self.pair_step += 1
        self.history.add(self.pair_step, phase, value)
        return value, {}

    def _embed_views(self, images: torch.Tensor, draws: torch.Tensor) -> torch.Tensor:
        """N×K×D normalised embeddings of each image under its K augmentation draws."""
        clip = self.objective.clip
        N, K = draws.shape[:2]
        out = torch.empty(N, K, clip.dim)
        flat = [(n, k) for n in range(N) for k in range(K)]
        with torch.no_grad(), self._autocast():
            for start in range(0, len(flat), 64):
                chunk = flat[start:start + 64]
                ni = torch.tensor([c[0] for c in chunk])
                ki = torch.tensor([c[1] for c in chunk])
                x = images[ni].to(self.device, torch.float32) / 255.0
                x = Augment.apply(x, draws[ni, ki])
                out[ni, ki] = clip.embed_images(x).float().cpu()
        return out

    def _small(self, images: ImageSet) -> torch.Tensor:
        size = self.s.view_size
        if images.pixels.shape[-1] == size:
            return images.pixels
        x = F.interpolate(images.pixels.float(), size=(size, size), mode="area")
        return x.round().clamp(0, 255).to(torch.uint8)

    def _ensure_views(self) -> None:
        """Stage A and C features: backlit and well-lit views are encoded once; one draw per (image, view) is
        shared by a backlit image and its results, as the reference shares one draw per sample (§5.1 c)."""
        if "backlit" in self._views:
            return
        if self.welllit is None:
            raise TrainingError(f"{self.objective.name} needs a well-lit folder for its prompt stages")
        aug = Augment(zoom=(0.5, 1.5))
        K = self.s.views
        self._draws = aug.draw(len(self.backlit) * K, self.gen).view(len(self.backlit), K, -1)
        w_draws = aug.draw(len(self.welllit) * K, self.gen).view(len(self.welllit), K, -1)
        self.log(f"encoding {K} augmented views of {len(self.backlit)} backlit and {len(self.welllit)} well-lit images")
        self._views["backlit"] = self._embed_views(self._small(self.backlit), self._draws)
        self._views["welllit"] = self._embed_views(self._small(self.welllit), w_draws)

    def _prepare_refinement(self) -> None:
        """Produce I_t (and I_{t-1}) for the backlit set with the saved round weights, batched, in memory."""
        self._ensure_views()
        small = self._small(self.backlit)
        for name in ("new", "old"):
            self._views.pop(name, None)
        for name, state in zip(("new", "old"), reversed(self.results)):
            net = copy.deepcopy(self.net)
            net.load_state_dict(state)
            net.eval()
            outs = []
            with torch.no_grad(), self._autocast():
                for start in range(0, len(small), 16):
                    x = small[start:start + 16].to(self.device, torch.float32) / 255.0
                    y = (x / (net(x).float() + EPS)).clamp(0, 1)
                    outs.append((y * 255).round().to(torch.uint8).cpu())  # the reference keeps 8-bit results
            self._views[name] = self._embed_views(torch.cat(outs), self._draws)

    # -- checkpoints ----------------------------------------------------------------------------------------

    def _new_net_optimizer(self):
        return torch.optim.Adam(self.net.parameters(), lr=self.s.lr, weight_decay=self.s.weight_decay)

    def save_state(self) -> None:
        state = {
            "settings": asdict(self.s),
            "method": getattr(self.objective, "name", "custom"),
            "step": self.step, "pair_step": self.pair_step, "round": self.round,
            "net": self.net.state_dict(), "opt_net": self._opt_net.state_dict(),
            "history": asdict(self.history), "generator": self.gen.get_state(),
            "results": self.results,
        }
        if self.pair is not None:
            state["pair"] = self.pair.state_dict()
            state["opt_pair"] = self._opt_pair.state_dict()
        atomic_write(self.workdir / STATE_FILE, lambda f: torch.save(state, f))

    def _load(self) -> None:
        path = self.workdir / STATE_FILE
        try:
            state = torch.load(path, map_location=self.device, weights_only=True)
        except Exception as e:  # noqa: BLE001 - a damaged or foreign file: say so, don't guess
            raise TrainingError(f"cannot resume from {path}: {e}; delete it to start afresh") from None
        method = getattr(self.objective, "name", "custom")
        if state.get("method") != method:
            raise TrainingError(f"{path} is a {state.get('method')} run, not {method}; use another work folder "
                                f"or delete it to start afresh")
        self.net.load_state_dict(state["net"])
        self._opt_net.load_state_dict(state["opt_net"])
        self.step, self.pair_step, self.round = state["step"], state["pair_step"], state["round"]
        self.history = History(**state["history"])
        self.gen.set_state(state["generator"])
        self.results = state["results"]
        self.s.warmup_steps = state["settings"]["warmup_steps"]  # a collapse restart may have extended it
        if self.pair is not None and "pair" in state:
            self.pair.load_state_dict(state["pair"])
            self._opt_pair.load_state_dict(state["opt_pair"])

    # -- reporting ------------------------------------------------------------------------------------------

    def _autocast(self):
        if self.amp is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp)

    def _bar(self):
        if not self.progress:
            return None
        from tqdm import tqdm

        done = self.step + self.pair_step
        return tqdm(total=self.total_iterations, initial=done, unit="step", file=sys.stderr, dynamic_ncols=True)

    def _report(self, bar, phase: str, loss: float, parts: dict) -> None:
        if bar is not None:
            bar.set_postfix_str(f"{phase} loss {loss:.4g}", refresh=False)
            bar.update(1)
            return
        done = self.step + self.pair_step
        if done % 50 == 0:
            elapsed = self.history.seconds
            total = self.total_iterations
            eta = elapsed / max(done, 1) * max(total - done, 0)
            self.log(f"{phase} step {done}/{total} loss {loss:.4g} ETA {eta / 60:.1f} min")


def train_network(net: EnhanceNet, objective, dataset: ImageSet, settings: TrainSettings, workdir: Path, *,
                  resume: bool = True, welllit: ImageSet | None = None, log=None,
                  progress: bool | None = None) -> History:
    """Train ``net`` in place; returns the loss history (see :class:`Trainer`)."""
    trainer = Trainer(net, objective, dataset, settings, workdir, welllit=welllit, log=log, progress=progress)
    trainer.run(resume=resume)
    return trainer.history

