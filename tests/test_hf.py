"""Tests for seglens.hf: tiny random-initialised transformers models built from configs, saved
with save_pretrained into tmp_path and loaded as users load them (``hf:<folder>``). No hub access:
conftest sets SEGLENS_OFFLINE=1 and the one test that names a hub repo blocks sockets."""

import json
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from seglens import Segmenter
from seglens.datasets import open_dataset
from seglens.evaluation import EvalConfig, score_dataset
from seglens.io import load_image
from seglens.models import WeightsError, load_model, sha256_file
from seglens.visualize import ADE20K_CATEGORIES, CITYSCAPES_CATEGORIES, cityscapes_palette, voc_palette
from tests.conftest import photo, varied

transformers = pytest.importorskip("transformers")
from seglens import hf  # after the skip: the tests below call transformers directly

NAMES5 = ("sky", "tree", "road", "person", "car")
VOC_NAMES = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "dining table",
    "dog",
    "horse",
    "motorbike",
    "person",
    "potted plant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)  # fmt: skip (spelled as Hugging Face's VOC checkpoints spell them, not as torchvision does)


def _labels(names):
    return {"id2label": dict(enumerate(names)), "label2id": {n: i for i, n in enumerate(names)}}


def _save(tmp_path_factory, name, model, processor) -> Path:
    folder = tmp_path_factory.mktemp(name)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def _segformer(names=NAMES5, seed=0):
    torch.manual_seed(seed)
    config = transformers.SegformerConfig(
        num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[8, 16], patch_sizes=[7, 3],
        strides=[4, 2], num_attention_heads=[1, 2], mlp_ratios=[2, 2], decoder_hidden_size=16, **_labels(names),
    )  # fmt: skip
    return transformers.SegformerForSemanticSegmentation(config).eval(), transformers.SegformerImageProcessor(
        size={"height": 96, "width": 96}
    )


def _calibrated(model, processor):
    """BatchNorm statistics from one train-mode pass over real photos (as conftest's
    calibrated_model does): random init alone gives near-constant label maps."""
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = None  # cumulative average over the pass
    batch = torch.cat(
        [processor(images=photo(n), return_tensors="pt")["pixel_values"] for n in ("astronaut", "chelsea", "coffee")]
    )
    model.train()
    with torch.no_grad():
        model(pixel_values=batch)
    return model.eval(), processor


def _upernet():
    torch.manual_seed(1)
    backbone = transformers.ConvNextConfig(
        hidden_sizes=[8, 16, 32, 64], depths=[1, 1, 1, 1], out_features=["stage1", "stage2", "stage3", "stage4"]
    )
    config = transformers.UperNetConfig(
        backbone_config=backbone, hidden_size=16, pool_scales=[1, 2], use_auxiliary_head=False, **_labels(NAMES5)
    )
    processor = transformers.SegformerImageProcessor(size={"height": 96, "width": 96})  # what upernet checkpoints ship
    return _calibrated(transformers.UperNetForSemanticSegmentation(config), processor)


def _mask2former():
    torch.manual_seed(0)
    swin = transformers.SwinConfig(
        image_size=64, patch_size=4, embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2], window_size=4,
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )  # fmt: skip
    config = transformers.Mask2FormerConfig(
        backbone_config=swin, feature_size=32, mask_feature_size=32, hidden_dim=32, encoder_feedforward_dim=32,
        encoder_layers=1, decoder_layers=2, num_attention_heads=2, dim_feedforward=32, num_queries=8, **_labels(NAMES5),
    )  # fmt: skip
    model = transformers.Mask2FormerForUniversalSegmentation(config).eval()
    with torch.no_grad():  # sharper class and mask predictions, else one class wins everywhere
        for name, p in model.named_parameters():
            if "class_predictor" in name or "mask_embedder" in name:
                p.mul_(20)
    return model, transformers.Mask2FormerImageProcessor(size={"shortest_edge": 96, "longest_edge": 160})


def _mobilevit():
    torch.manual_seed(3)
    config = transformers.MobileViTConfig(
        image_size=64, hidden_sizes=[16, 16, 16], neck_hidden_sizes=[8, 8, 16, 16, 16, 16, 32], num_attention_heads=2,
        aspp_out_channels=16, **_labels(VOC_NAMES),
    )  # fmt: skip
    processor = transformers.MobileViTImageProcessor(size={"shortest_edge": 80}, crop_size={"height": 64, "width": 64})
    return _calibrated(transformers.MobileViTForSemanticSegmentation(config), processor)


def _beit():
    torch.manual_seed(4)
    config = transformers.BeitConfig(
        image_size=64, patch_size=16, hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
        intermediate_size=64, out_indices=[0, 1, 2, 3], use_auxiliary_head=False, pool_scales=[1, 2],
        auxiliary_channels=16, **_labels(NAMES5),
    )  # fmt: skip
    processor = transformers.BeitImageProcessor(size={"height": 64, "width": 64}, do_center_crop=False)
    return _calibrated(transformers.BeitForSemanticSegmentation(config), processor)


def _dpt():
    torch.manual_seed(5)
    config = transformers.DPTConfig(
        image_size=64, patch_size=16, hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
        neck_hidden_sizes=[8, 16, 32, 32], fusion_hidden_size=16, backbone_out_indices=[0, 1, 2, 3],
        use_auxiliary_head=False, **_labels(NAMES5),
    )  # fmt: skip
    return _calibrated(
        transformers.DPTForSemanticSegmentation(config),
        transformers.DPTImageProcessor(size={"height": 64, "width": 64}),
    )


def _clip_tokenizer(words=("the", "task", "is", "semantic", "instance", "panoptic")):
    """A tiny CLIP BPE tokenizer made by hand (OneFormer's real one, openai's CLIP vocabulary,
    comes from the hub): CLIP's two special tokens, the letters of ``words``, and merges that
    join each word letter by letter into one token ending in "</w>", as CLIP's vocabulary has
    its common words."""
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    merges: list[tuple[str, str]] = []
    for word in words:
        pieces = [*word[:-1], word[-1] + "</w>"]
        for piece in pieces:
            vocab.setdefault(piece, len(vocab))
        joined = pieces[0]
        for piece in pieces[1:]:
            if (joined, piece) not in merges:
                merges.append((joined, piece))
            joined += piece
            vocab.setdefault(joined, len(vocab))
    return transformers.CLIPTokenizer(vocab=vocab, merges=merges)


ONEFORMER_TASK_LEN = 8  # config.task_seq_len = the processor's task_seq_length (77 in published checkpoints)


def _oneformer():
    """Model + OneFormerProcessor (image processor and the hand-made tokenizer), saved together as
    ``processor.save_pretrained`` writes them. The image processor has no class_info_file: its
    panoptic metadata only serves training annotations (see the hub-metadata test)."""
    torch.manual_seed(0)
    tokenizer = _clip_tokenizer()
    swin = transformers.SwinConfig(
        image_size=64, patch_size=4, embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2], window_size=4,
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )  # fmt: skip
    config = transformers.OneFormerConfig(
        backbone_config=swin, conv_dim=32, mask_dim=32, hidden_dim=32, encoder_feedforward_dim=32, encoder_layers=1,
        decoder_layers=2, num_attention_heads=2, dim_feedforward=32, num_queries=8, query_dec_layers=1,
        task_seq_len=ONEFORMER_TASK_LEN, text_encoder_context_length=ONEFORMER_TASK_LEN, text_encoder_width=64,
        text_encoder_num_layers=1, text_encoder_n_ctx=2, text_encoder_vocab_size=len(tokenizer), **_labels(NAMES5),
    )  # fmt: skip
    model = transformers.OneFormerForUniversalSegmentation(config).eval()
    with torch.no_grad():  # sharper class and mask predictions, else one class wins everywhere
        for name, p in model.named_parameters():
            if "class_embed" in name:
                p.mul_(20)
            elif "mask_embed" in name:
                p.mul_(5)  # x 20 saturates the sigmoids: whole regions where every class scores 0, a tie
    image_processor = transformers.OneFormerImageProcessor(
        size={"shortest_edge": 96, "longest_edge": 160}, num_labels=len(NAMES5)
    )
    processor = transformers.OneFormerProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        max_seq_length=ONEFORMER_TASK_LEN,
        task_seq_length=ONEFORMER_TASK_LEN,
    )
    return model, processor


BUILDERS = {
    "segformer": _segformer, "upernet": _upernet, "mask2former": _mask2former, "mobilevit": _mobilevit, "beit": _beit,
    "dpt": _dpt, "oneformer": _oneformer,
}  # fmt: skip


@pytest.fixture(scope="session")
def saved(tmp_path_factory):
    """Factory: folder of a saved tiny checkpoint (model + image processor; OneFormer: + tokenizer), one per family."""
    cache: dict[str, Path] = {}

    def make(family: str) -> Path:
        if family not in cache:
            cache[family] = _save(tmp_path_factory, family, *BUILDERS[family]())
        return cache[family]

    return make


def _hf_pipeline(
    folder: Path, image: Image.Image, *, scores: bool = False
) -> np.ndarray | tuple[np.ndarray, torch.Tensor]:
    """Hugging Face's own path: processor -> model -> post_process_semantic_segmentation.
    OneFormer: OneFormerProcessor (image processor + tokenizer) with task_inputs=["semantic"].
    ``scores``: also the (C, H, W) class scores the labels are the argmax of."""
    config = transformers.AutoConfig.from_pretrained(folder)
    universal = config.model_type in ("mask2former", "oneformer")
    auto = (
        transformers.AutoModelForUniversalSegmentation if universal else transformers.AutoModelForSemanticSegmentation
    )
    model = auto.from_pretrained(folder).eval()
    if config.model_type == "oneformer":
        processor = transformers.AutoProcessor.from_pretrained(folder)
        assert isinstance(processor, transformers.OneFormerProcessor)
        inputs = processor(images=image, task_inputs=["semantic"], return_tensors="pt")
    else:
        processor = transformers.AutoImageProcessor.from_pretrained(folder)
        inputs = processor(images=image, return_tensors="pt")
    with torch.no_grad():
        outputs = model(**inputs)
    size = [(image.height, image.width)]
    if scores:
        result = processor.post_process_semantic_segmentation(
            outputs, target_sizes=size, return_segmentation_scores=True
        )[0]
        return result.segmentation.numpy(), result.segmentation_scores
    return processor.post_process_semantic_segmentation(outputs, target_sizes=size)[0].numpy()


# --- loading -------------------------------------------------------------------------------


def test_folder_checkpoint_loads_as_users_load_it(saved):
    folder = saved("segformer")
    loaded = load_model(f"hf:{folder}")
    assert loaded.name == f"hf:{folder}"
    assert loaded.categories == NAMES5  # id2label in id order
    assert loaded.weights == "official" and loaded.meaningful
    assert loaded.sha256 == sha256_file(folder / "model.safetensors")  # the safetensors file, hashed
    assert loaded.weights_tag == f"{folder.name} (model.safetensors, sha256 {loaded.sha256[:12]})"
    assert loaded.scores == "logits"
    assert loaded.normalize == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))  # SegFormer's ImageNet mean/std
    assert not loaded.model.training
    x = loaded.transforms(photo("chelsea"))
    assert x.dtype == torch.float32 and x.shape == (3, 96, 96)  # the processor's fixed 96 x 96
    out = loaded.model(x[None])["out"]
    assert out.dtype == torch.float32 and out.shape == (1, 5, 24, 24)  # SegFormer: 1/4 resolution


def test_mask_classification_checkpoint_gives_class_scores(saved):
    loaded = load_model(f"hf:{saved('mask2former')}")
    assert loaded.scores == "probs"
    x = loaded.transforms(photo("chelsea"))
    out = loaded.model(x[None])["out"]
    # Mask2Former's post-processor resizes mask logits to 384 x 384 before the einsum.
    assert out.shape == (1, 5, 384, 384) and out.min() >= 0


def test_oneformer_checkpoint_gives_class_scores_for_the_semantic_task(saved):
    folder = saved("oneformer")
    loaded = load_model(f"hf:{folder}")
    assert loaded.scores == "probs"
    assert loaded.categories == NAMES5
    # The task prompt, tokenized by the checkpoint's own tokenizer, as OneFormerProcessor does it.
    processor = transformers.AutoProcessor.from_pretrained(folder)
    tokens = processor.tokenizer.convert_ids_to_tokens(processor.tokenizer("the task is semantic")["input_ids"])
    assert tokens == [
        "<|startoftext|>",
        "the</w>",
        "task</w>",
        "is</w>",
        "semantic</w>",
        "<|endoftext|>",
    ]  # whole words
    image = photo("chelsea")
    expected = processor(images=image, task_inputs=["semantic"], return_tensors="pt")
    assert expected["task_inputs"].shape == (1, ONEFORMER_TASK_LEN)
    torch.testing.assert_close(loaded.model.task_inputs, expected["task_inputs"], rtol=0, atol=0)
    x = loaded.transforms(image)
    torch.testing.assert_close(x, expected["pixel_values"][0], rtol=0, atol=0)
    with torch.no_grad():
        out = loaded.model(x[None])["out"]
        outputs = transformers.AutoModelForUniversalSegmentation.from_pretrained(folder).eval()(**expected)
    # OneFormer's post-processor keeps the mask logits at the model's 1/4 resolution (96 x 144 in).
    assert out.shape == (1, 5, 24, 36) and out.min() >= 0
    # Before the final resize: the post-processor's own class scores, bit for bit.
    scores = processor.post_process_semantic_segmentation(outputs, return_segmentation_scores=True)[
        0
    ].segmentation_scores
    torch.testing.assert_close(out[0], scores, rtol=0, atol=0)


def test_oneformer_class_info_on_the_hub_is_never_fetched(tmp_path, monkeypatch, saved):
    """Published OneFormer checkpoints name their panoptic class metadata in the hub repo
    shi-labs/oneformer_demo, which OneFormerImageProcessor downloads when it is built; seglens
    does not need it (semantic inference uses config.id2label) and loads such a folder offline."""
    folder = tmp_path / "published"
    folder.mkdir()
    for f in saved("oneformer").iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    config = json.loads((folder / "processor_config.json").read_text())
    config["image_processor"].update(class_info_file="ade20k_panoptic.json", repo_path="shi-labs/oneformer_demo")
    (folder / "processor_config.json").write_text(json.dumps(config))

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    loaded = load_model(f"hf:{folder}")
    assert loaded.scores == "probs" and loaded.categories == NAMES5


@pytest.mark.parametrize("family", ["segformer", "upernet", "mask2former", "mobilevit", "beit", "dpt", "oneformer"])
def test_segmenter_labels_equal_hugging_face_pipeline(saved, family):
    folder = saved(family)
    seg = Segmenter(f"hf:{folder}", device="cpu")
    for name in ("astronaut", "chelsea"):
        image = photo(name)
        labels = seg(image).labels
        if family == "oneformer":
            expected, scores = _hf_pipeline(folder, image, scores=True)
            assert labels.shape == expected.shape == (image.height, image.width)
            # OneFormerImageProcessor (torchvision backend, AutoImageProcessor's default) resizes
            # the scores with torchvision's antialiased bilinear kernel, which equals bilinear
            # (what seglens and the other post-processors use) up to float rounding (~1e-6
            # relative); labels may differ only where two classes tie within that rounding.
            top2 = scores.topk(2, dim=0).values.numpy()
            tied = top2[0] - top2[1] <= 1e-5 * top2[0]
            differ = labels != expected
            assert not (differ & ~tied).any()
            assert differ.sum() <= 1e-4 * labels.size and tied.sum() <= 1e-3 * labels.size
            labels = np.where(tied, expected, labels)
        else:
            expected = _hf_pipeline(folder, image)
        assert labels.shape == expected.shape == (image.height, image.width)
        np.testing.assert_array_equal(labels, expected)
        assert varied(labels)  # a comparison worth making


def test_palette_follows_class_names(tmp_path_factory, saved):
    cityscapes = _save(tmp_path_factory, "cityscapes", *_segformer(CITYSCAPES_CATEGORIES))
    np.testing.assert_array_equal(load_model(f"hf:{cityscapes}").palette, cityscapes_palette())
    voc = load_model(f"hf:{saved('mobilevit')}")
    np.testing.assert_array_equal(voc.palette, voc_palette())
    assert voc.normalize == ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))  # MobileViT: rescale to 0..1 only
    ade = _save(
        tmp_path_factory, "ade", *_segformer([n + " " if n == "bed" else n for n in ADE20K_CATEGORIES])
    )  # HF's "bed "
    loaded = load_model(f"hf:{ade}")
    assert loaded.categories == ADE20K_CATEGORIES  # names are stripped
    assert tuple(loaded.palette[0]) == (120, 120, 120)  # wall, ADE20K palette
    other = load_model(f"hf:{saved('segformer')}").palette
    assert other.shape == (256, 3) and len({tuple(c) for c in other[:5]}) == 5


# --- errors --------------------------------------------------------------------------------


def test_missing_transformers_gives_install_hint(monkeypatch, saved):
    folder = saved("segformer")
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers -> ImportError
    with pytest.raises(WeightsError, match=r"^hf:.*: needs Hugging Face transformers: pip install 'seglens\[hf\]'$"):
        load_model(f"hf:{folder}")


def test_unknown_repo_offline_is_one_line_and_never_connects(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    with pytest.raises(WeightsError) as info:
        load_model("hf:nobody-here/no-such-model-123")
    message = str(info.value)
    assert "\n" not in message
    assert "nobody-here/no-such-model-123 is not in the Hugging Face cache" in message
    assert "SEGLENS_OFFLINE is set" in message and "hf download nobody-here/no-such-model-123" in message


@pytest.mark.parametrize("spec", ["./no/such/folder", "/no/such/folder", "org/name@", "a b"])
def test_spec_that_is_neither_folder_nor_repo_id(spec):
    with pytest.raises(WeightsError, match="no such folder and not a Hugging Face repo id"):
        load_model(f"hf:{spec}")


def test_weights_option_does_not_apply(saved):
    with pytest.raises(WeightsError, match="carry their own weights"):
        load_model(f"hf:{saved('segformer')}", weights="random")


def test_id2label_must_cover_every_class(tmp_path, saved):
    folder = tmp_path / "gap"
    folder.mkdir()
    for f in saved("segformer").iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    config = json.loads((folder / "config.json").read_text())
    config["id2label"] = {"0": "sky", "2": "road"}  # id 1 missing
    config["label2id"] = {"sky": 0, "road": 2}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(WeightsError, match=r"id2label must name every class id 0\.\.1 \(missing: \[1\]\)"):
        load_model(f"hf:{folder}")


def test_incomplete_checkpoint_is_refused(tmp_path, saved):
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "headless"
    folder.mkdir()
    for f in saved("segformer").iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    state = {k: v for k, v in load_file(folder / "model.safetensors").items() if "classifier" not in k}
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(WeightsError, match=r"lacks weights of SegformerForSemanticSegmentation: 2 missing"):
        load_model(f"hf:{folder}")


def test_classification_checkpoint_is_not_a_segmenter(tmp_path):
    torch.manual_seed(0)
    config = transformers.ConvNextConfig(hidden_sizes=[8, 16, 32, 64], depths=[1, 1, 1, 1])
    transformers.ConvNextForImageClassification(config).save_pretrained(tmp_path)
    with pytest.raises(WeightsError, match="a convnext checkpoint is not a semantic-segmentation model"):
        load_model(f"hf:{tmp_path}")


# --- curated list --------------------------------------------------------------------------


def test_curated_rows_read_the_cache_only(tmp_path, monkeypatch):
    monkeypatch.setattr(socket.socket, "connect", lambda *a, **k: pytest.fail("network access attempted"))
    # A cache holding one curated repo, laid out as huggingface_hub writes it.
    repo = hf.HF_MODELS[0].repo
    snapshot = tmp_path / f"models--{repo.replace('/', '--')}" / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (snapshot / "model.safetensors").write_bytes(b"")
    (tmp_path / f"models--{repo.replace('/', '--')}" / "refs").mkdir()
    (tmp_path / f"models--{repo.replace('/', '--')}" / "refs" / "main").write_text("a" * 40)
    rows = hf.hf_model_rows(cache_dir=tmp_path)
    assert [r.name for r in rows] == ["hf:" + m.repo for m in hf.HF_MODELS]
    assert [r.cached for r in rows] == [True] + [False] * (len(rows) - 1)
    assert 5 <= len(rows) <= 8
    for row in rows:
        assert row.source and row.num_classes in (19, 21, 150)
        assert row.miou is not None or "not confirmed" in row.source


# --- evaluation ----------------------------------------------------------------------------


def test_evaluate_on_ade20k_layout_scores_own_predictions_perfectly(tmp_path, saved):
    """Annotations are the model's own labels + 1 (ADE20K stores class + 1), one pixel set to 0
    ("other", ignored): the score is exactly 100% over the classes present."""
    seg = Segmenter(f"hf:{saved('segformer')}", device="cpu")
    images = tmp_path / "ADEChallengeData2016" / "images" / "validation"
    annotations = tmp_path / "ADEChallengeData2016" / "annotations" / "validation"
    images.mkdir(parents=True)
    annotations.mkdir(parents=True)
    for i, name in enumerate(("astronaut", "chelsea", "coffee")):
        path = images / f"ADE_val_{i:08d}.jpg"
        photo(name).resize((160, 120)).save(path, quality=90)
        labels = seg(load_image(path)).labels  # the image as dataset[i] decodes it
        assert varied(labels)
        stored = labels + 1
        stored[0, 0] = 0
        Image.fromarray(stored, mode="L").save(annotations / f"{path.stem}.png")
    dataset = open_dataset("ade20k", tmp_path, split="val")  # the parent of ADEChallengeData2016
    assert len(dataset) == 3 and dataset.categories == ADE20K_CATEGORIES
    result = score_dataset(seg, dataset, EvalConfig(protocol="torchvision", worst=0))
    m = result.to_dict()
    assert m["protocol"] == "native"  # hf models have no torchvision preset
    assert m["miou"] == 100.0 and m["pixel_acc"] == 100.0
    assert np.asarray(m["confusion_matrix"]).sum() == 3 * 160 * 120 - 3  # one ignored pixel per image
    assert m["class_names"] == list(NAMES5)


@pytest.mark.parametrize(
    "processor",
    [
        transformers.SegformerImageProcessor(do_resize=False),  # rescale 1/255, ImageNet mean/std
        transformers.SegformerImageProcessor(
            do_resize=False, rescale_factor=1 / 127.5, image_mean=[1, 1, 1], image_std=[1, 1, 1]
        ),
        transformers.MobileViTImageProcessor(do_resize=False, do_center_crop=False),  # 0..1, then RGB -> BGR
    ],
    ids=["imagenet", "minus-one-to-one", "bgr"],
)
def test_normalize_reproduces_the_processor_in_rgb(processor):
    """What the Segmenter's scale / tile modes compute from ``normalize`` equals the processor's
    own output (RGB order; the BGR model wrapper flips back), up to float rounding."""
    image = photo("chelsea").crop((0, 0, 64, 48))
    mean, std = hf._normalize(processor)
    u = torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 255
    expected = (u - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    torch.testing.assert_close(hf._ProcessorTransform(processor)(image), expected, rtol=1e-5, atol=1e-5)


def test_progress_false_hides_bars_and_restores_them(saved, capfd):
    from transformers.utils import logging as hf_logging

    before = hf_logging.is_progress_bar_enabled()
    load_model(f"hf:{saved('segformer')}", progress=False)
    assert "Loading weights" not in capfd.readouterr().err
    assert hf_logging.is_progress_bar_enabled() == before


def test_hub_checkpoint_fingerprint_comes_from_the_cache(tmp_path, monkeypatch):
    """A cached hub snapshot: commit from the snapshot folder, SHA-256 from the blob's name
    (huggingface_hub stores LFS files under their SHA-256), without hashing or network."""
    import functools

    import huggingface_hub

    digest = "ab" * 32
    repo_dir = tmp_path / "models--org--tiny"
    (repo_dir / "blobs").mkdir(parents=True)
    (repo_dir / "blobs" / digest).write_bytes(b"not really weights")
    snapshot = repo_dir / "snapshots" / ("c" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "model.safetensors").symlink_to(repo_dir / "blobs" / digest)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text("c" * 40)
    monkeypatch.setattr(
        huggingface_hub,
        "try_to_load_from_cache",
        functools.partial(huggingface_hub.try_to_load_from_cache, cache_dir=tmp_path),
    )
    assert hf._weights_fingerprint("org/tiny", None, False) == (
        f"org/tiny (commit {'c' * 12}, sha256 {'ab' * 6})",
        digest,
    )
