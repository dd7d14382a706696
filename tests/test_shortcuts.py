"""The exact shortcuts change no number, and do skip the work: trained prompts and logits with every
shortcut on equal those with every shortcut off (the reference computation), in fp32 to 1e-4; the memory
options (class chunks, text checkpointing) give the same features and gradients."""
import dataclasses
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from metaprompt.config import RunConfig
from metaprompt.data.base import Datum, DatasetSplits
from metaprompt.config import TrainConfig
from metaprompt.engine import Trainer
from metaprompt.evaluation import evaluate
from metaprompt.experiment import build_method_for_run
from metaprompt.methods import Batch, ComputeOptions
from helpers import make_image_folder

ATOL = 1e-4
CLASSES = ["red star", "blue circle", "green square", "cat", "dog", "big truck"]
FOLDER_CLASSES = ["red", "green", "blue", "grey"]
ON = ComputeOptions()
OFF = ComputeOptions.reference()
CONFIGS = {
    "metaprompt-class": ("metaprompt", {"text_depth": 2, "vision_depth": 2, "meta_split": "class"}),
    "metaprompt-domain": ("metaprompt", {"text_depth": 2, "vision_depth": 2, "meta_split": "domain"}),
    "coop": ("coop", {}),
    "cocoop": ("cocoop", {}),
    "maple": ("maple", {"depth": 2}),
}


def build(model, config: str, options: ComputeOptions, classnames=CLASSES, items=(), precision="fp32",
          device="cpu"):
    """The method as a run builds it, with the same random prompts for every ``options``."""
    method, method_config = CONFIGS[config]
    cfg = RunConfig(method, model=model[0], pretrained=model[1], method_config=method_config,
                    train=TrainConfig(precision=precision))
    task = DatasetSplits("test", list(classnames), list(items), [], [])
    torch.manual_seed(0)
    return build_method_for_run(cfg, task, device, options)


def batches(n: int = 2) -> list[Batch]:
    g = torch.Generator().manual_seed(1)
    return [Batch(torch.randn(8, 3, 32, 32, generator=g), torch.tensor([0, 1, 2, 3, 4, 5, 0, 3]),
                  torch.tensor([0, 0, 0, 1, 1, 1, 2, 2])) for _ in range(n)]


def train_and_predict(method, steps: list[Batch], test_images: torch.Tensor):
    opt = torch.optim.SGD(method.trainable_parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    for batch in steps:
        method.forward_backward(batch, opt)
    with method.evaluation():
        logits = torch.cat([method.model_inference(x) for x in test_images.split(4)])
    return method.trained_tensors(), logits



def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name], b[name], atol=ATOL), (name, (a[name] - b[name]).abs().max())


@pytest.mark.parametrize("config", list(CONFIGS))
def test_training_steps_and_logits_are_the_same_with_shortcuts_off(model, config):
    steps, test_images = batches(), torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    on, off = build(model, config, ON), build(model, config, OFF)
    start = {name: t.clone() for name, t in on.trained_tensors().items()}  # trained_tensors may alias
    prompts_on, logits_on = train_and_predict(on, steps, test_images)
    prompts_off, logits_off = train_and_predict(off, steps, test_images)
    assert any((prompts_on[n] - start[n]).abs().max() > 100 * ATOL for n in start)  # training moved them
    assert_same(prompts_on, prompts_off)
    assert torch.allclose(logits_on, logits_off, atol=ATOL), (logits_on - logits_off).abs().max()


@pytest.mark.gpu
@pytest.mark.parametrize("config", list(CONFIGS))
def test_shortcuts_on_and_off_agree_on_the_gpu(model, config):
    """The same on CUDA in exact fp32 (no TF32), where other kernels (fused attention, cuBLAS) run: the
    shortcuts change what is computed, not the result."""
    device = torch.device("cuda")
    steps = [dataclasses.replace(b, images=b.images.to(device), labels=b.labels.to(device),
                                 domains=b.domains.to(device)) for b in batches()]
    test_images = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(2)).to(device)
    on, off = build(model, config, ON, device="cuda"), build(model, config, OFF, device="cuda")
    prompts_on, logits_on = train_and_predict(on, steps, test_images)
    prompts_off, logits_off = train_and_predict(off, steps, test_images)
    assert_same({n: t.cpu() for n, t in prompts_on.items()}, {n: t.cpu() for n, t in prompts_off.items()})
    assert torch.allclose(logits_on, logits_off, atol=ATOL), (logits_on - logits_off).abs().max()


class Work:
    """Counts what the encoders of a CLIP are asked to do: text sequences (and their lengths), images."""

    def __init__(self, clip, monkeypatch):
        self.text_lengths: list[int] = []
        self.images = 0
        encode_text, encode_image = clip.encode_text_embeddings, clip.encode_image

        def text(x, eot, prompts=None, length=None):
            ran = (length or int(eot.max()) + 1) if clip.truncate_context else x.shape[1]
            self.text_lengths += [ran] * x.shape[0]
            return encode_text(x, eot, prompts, length=length)

        def image(images, prompts=None):
            self.images += images.shape[0]
            return encode_image(images, prompts)

        monkeypatch.setattr(clip, "encode_text_embeddings", text)
        monkeypatch.setattr(clip, "encode_image", image)


@pytest.mark.parametrize("config, on_work, off_work", [
    # on: in-domain pass (all 6 classes; 8 frozen + 8 prompted images), then 2 cross-class episodes of two
    #     passes over 3 classes each with the frozen features reused and no prompted image pass.
    # off: the released code's 5 full passes (frozen image, prompted image, text over all classes).
    ("metaprompt-class", (6 + 4 * 3, 16), (5 * 6, 5 * 16)),
    # on: in-domain pass, then 3 cross-domain episodes (one per domain) whose meta-train and meta-test
    #     passes together put the 8 images once through the prompted encoder only (no text pass);
    # off: 1 + 3 * 2 full passes.
    ("metaprompt-domain", (6, 16 + 3 * 8), (7 * 6, 7 * 16)),
])
def test_shortcuts_skip_the_reference_work(model, monkeypatch, config, on_work, off_work):
    for options, (sequences, images) in ((ON, on_work), (OFF, off_work)):
        method = build(model, config, options)
        work = Work(method.clip, monkeypatch)
        method.forward_backward(batches(1)[0], torch.optim.SGD(method.trainable_parameters(), lr=0.05))
        assert (len(work.text_lengths), work.images) == (sequences, images)
        assert all(length < 77 for length in work.text_lengths) if options.truncate_context else \
            set(work.text_lengths) == {77}


def folder_items(root, classnames: list[str], split: str) -> list[Datum]:
    return [Datum(str(path), label, name) for label, name in enumerate(classnames)
            for path in sorted((root / split / name).glob("*.png"))]


@pytest.fixture()
def folder(tmp_path):
    root = make_image_folder(tmp_path, FOLDER_CLASSES, {"train": 3, "test": 2})
    return folder_items(root, FOLDER_CLASSES, "train"), folder_items(root, FOLDER_CLASSES, "test")


@dataclasses.dataclass
class Run:
    start: dict[str, torch.Tensor]
    trained: dict[str, torch.Tensor]
    logits: torch.Tensor
    images_encoded: int
    """Images the CLIP image encoder saw during training."""
    trainer: Trainer


def fit_and_evaluate(model, config: str, options: ComputeOptions, folder, cfg: TrainConfig, monkeypatch,
                     precision: str = "fp32") -> Run:
    train, test = folder
    method = build(model, config, options, classnames=FOLDER_CLASSES, items=train, precision=precision)
    work = Work(method.clip, monkeypatch)
    start = {name: t.clone() for name, t in method.trained_tensors().items()}
    trainer = Trainer(method, train, cfg, progress=False)
    trainer.fit()
    images_encoded = work.images
    logits = evaluate(method, test, batch_size=3, num_workers=0, progress=False).logits
    return Run(start, method.trained_tensors(), logits, images_encoded, trainer)


def test_coop_feature_cache_is_exact_over_epochs_and_encodes_each_view_once(model, folder, monkeypatch):
    cfg = TrainConfig(epochs=3, batch_size=4, lr=0.05, warmup_epochs=0, augment_views=2, num_workers=0)
    on, off = (fit_and_evaluate(model, "coop", options, folder, cfg, monkeypatch) for options in (ON, OFF))
    # Epochs 1 and 3 use view 0, epoch 2 view 1: with the cache each view is encoded once, in full
    # (12 images per view), and no training batch runs the encoder; without it every epoch encodes its
    # 12 training images again.
    n = len(folder[0])
    assert on.images_encoded == on.trainer.feature_cache.encoded_images == 2 * n
    assert off.images_encoded == 3 * n and off.trainer.feature_cache is None
    assert_same(on.trained, off.trained)
    assert torch.allclose(on.logits, off.logits, atol=ATOL)


def class_features_and_gradient(model, options: ComputeOptions):
    method = build(model, "metaprompt-class", options)
    features = method.encode_classes()
    (grad,) = torch.autograd.grad(F.cross_entropy(features @ features.t() * 10, torch.arange(6)),
                                  method.text_prompts)
    return features.detach(), grad


@pytest.mark.parametrize("memory", [{"class_chunk": 4}, {"class_chunk": 1}, {"text_checkpointing": True}],
                         ids=["chunk4", "chunk1", "checkpointing"])
def test_memory_options_give_the_same_features_and_gradients(model, memory):
    features, grad = class_features_and_gradient(model, ON)
    features_m, grad_m = class_features_and_gradient(model, dataclasses.replace(ON, **memory))
    assert torch.allclose(features, features_m, atol=ATOL)
    assert grad.abs().max() > 0 and torch.allclose(grad, grad_m, atol=ATOL)


@pytest.mark.parametrize("config", ["metaprompt-class", "coop"])
def test_bf16_autocast_trains_and_evaluates_on_cpu(model, folder, config, monkeypatch):
    """Mixed precision end to end (feature cache included): finite losses, moved prompts, logits near fp32."""
    cfg = TrainConfig(epochs=2, batch_size=4, lr=0.05, warmup_epochs=0, augment_views=1, num_workers=0)
    fp32, bf16 = (fit_and_evaluate(model, config, ON, folder, cfg, monkeypatch, precision)
                  for precision in ("fp32", "bf16"))
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in bf16.trainer.state.history)
    assert any((bf16.trained[n] - bf16.start[n]).abs().max() > 0 for n in bf16.start)
    assert torch.allclose(bf16.logits, fp32.logits, atol=0.05 * fp32.logits.abs().max())


def test_decoded_test_images_are_reused_by_the_next_evaluation_with_the_same_logits(model, tmp_path, monkeypatch):
    """A sweep tests on the same images again (another seed, another class subset): the second evaluation
    reads none of them from disk and computes the logits the first computed, bit for bit."""
    from metaprompt.data import dataset as data_module
    from metaprompt.evaluation import DecodedImages, evaluate

    root = make_image_folder(tmp_path, FOLDER_CLASSES, {"test": 3})
    items = folder_items(root, FOLDER_CLASSES, "test")
    method = build(model, "maple", ON, classnames=FOLDER_CLASSES)
    loads = []
    original = data_module.load_image
    monkeypatch.setattr(data_module, "load_image", lambda *a, **k: loads.append(a[0]) or original(*a, **k))
    decoded = DecodedImages()
    first = evaluate(method, items, batch_size=4, num_workers=0, progress=False, decoded=decoded)
    assert len(loads) == len(items) and decoded.held == len(items) * 3 * 32 * 32
    second = evaluate(method, items, batch_size=4, num_workers=0, progress=False, decoded=decoded)
    assert len(loads) == len(items) and torch.equal(first.logits, second.logits)
    assert torch.equal(first.labels, second.labels)
    uncached = evaluate(method, items, batch_size=4, num_workers=0, progress=False, decoded=None)
    assert torch.equal(uncached.logits, first.logits)
    full = DecodedImages(budget=3 * 32 * 32 * 2)  # room for two images: the rest is read again next time
    evaluate(method, items, batch_size=4, num_workers=0, progress=False, decoded=full)
    assert len(full.images) == 2 and full.lookup(items, 32) is None
    changed = Path(items[0].impath)  # a file rewritten since is decoded again, not served from memory
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))
    assert decoded.lookup(items, 32) is None
    evaluate(method, items, batch_size=4, num_workers=0, progress=False, decoded=decoded)
    assert len(loads) == 4 * len(items) and decoded.lookup(items, 32) is not None
