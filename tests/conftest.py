"""Shared test fixtures: a tiny random BERT classifier with planted outlier channels, built in the test."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("QBERT_QUIET", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
FIXTURE = SHARED / "fixtures" / "minilm-l6-qnli"
EVAL_TSV = SHARED / "data" / "qnli" / "eval.tsv"
TUNE_TSV = SHARED / "data" / "qnli" / "tune.tsv"

WORDS = ("the a is was who what when where how many city river king war year built wrote capital "
         "france paris bridge moon mars two small large first last people music book water red blue "
         "of in on at by and or not to from with for it he she they this that").split()
OUTLIER_CHANNELS = (5, 19)
OUTLIER_LAYER = 0

requires_fixture = pytest.mark.skipif(not (FIXTURE / "config.json").is_file() or not EVAL_TSV.is_file(),
                                      reason="../shared fixture and data not present")


def sentence(rng, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def write_tsv(path: Path, n: int, seed: int = 0, labels=("entailment", "not_entailment"),
              words: tuple[int, int] = (4, 30)) -> Path:
    """`n` QNLI-style rows; `words` bounds each sentence's length (long ones outrun a tiny model's positions)."""
    import random

    rng = random.Random(seed)
    lines = ["index\tquestion\tsentence\tlabel"]
    for i in range(n):
        lines.append(f"{i}\t{sentence(rng, rng.randint(3, 8))}?\t{sentence(rng, rng.randint(*words))}."
                     f"\t{labels[rng.randint(0, 1)]}")
    path.write_text("\n".join(lines) + "\n")
    return path




# Each variant's configuration values as in its released checkpoint (pad/bos/eos ids, position offset, token
# type vocabulary, activation, LayerNorm eps, embedding width relative to hidden), at toy sizes. RoBERTa-style
# models number positions from pad + 1 and have a single token type, so their tokenizer emits no type ids.
RELEASED = {
    "bert": ("bert", {}),  # bert-base-uncased: pad 0, 2 token types, eps 1e-12, gelu
    "roberta": ("roberta", dict(pad_token_id=1, bos_token_id=0, eos_token_id=2, type_vocab_size=1,
                                layer_norm_eps=1e-5, hidden_act="gelu")),
    "xlm-roberta": ("xlm-roberta", dict(pad_token_id=1, bos_token_id=0, eos_token_id=2, type_vocab_size=1,
                                        layer_norm_eps=1e-5, hidden_act="gelu")),
    "camembert": ("camembert", dict(pad_token_id=1, bos_token_id=5, eos_token_id=6, type_vocab_size=1,
                                    layer_norm_eps=1e-5, hidden_act="gelu")),
    "electra": ("electra", dict(embedding_size=None, layer_norm_eps=1e-12, hidden_act="gelu")),  # base: no projection
    "electra-small": ("electra", dict(embedding_size="half", layer_norm_eps=1e-12, hidden_act="gelu")),
    "distilbert": ("distilbert", dict(activation="gelu", sinusoidal_pos_embds=False)),
    "albert": ("albert", dict(embedding_size="half", num_hidden_groups=1, inner_group_num=1, hidden_act="gelu_new",
                              bos_token_id=2, eos_token_id=3, layer_norm_eps=1e-12, classifier_dropout_prob=0.1)),
}
ROBERTA_STYLE = ("roberta", "xlm-roberta", "camembert")
_SPECIALS = {  # id order of the special tokens in each released vocabulary
    "roberta": ["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
    "xlm-roberta": ["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
    "camembert": ["<s>NOTUSED", "<pad>", "</s>NOTUSED", "<unk>", "<unk>NOTUSED", "<s>", "</s>", "<mask>"],
}


def model_type(variant: str) -> str:
    return RELEASED[variant][0]


def _bpe_tokenizer(folder: Path, kind: str) -> int:
    """A byte-level BPE tokenizer with the released model's special-token ids and no token type ids, trained on
    the test vocabulary (RoBERTa's own is not available offline); returns its size."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import RobertaTokenizerFast

    specials = _SPECIALS[kind]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator([" ".join(WORDS) + " ? ."] * 4, trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    bos, eos = ("<s>", "</s>")
    tok.post_processor = processors.RobertaProcessing((eos, tok.token_to_id(eos)), (bos, tok.token_to_id(bos)))
    fast = RobertaTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos, sep_token=eos, cls_token=bos,
                                unk_token="<unk>", pad_token="<pad>", mask_token="<mask>",
                                model_input_names=["input_ids", "attention_mask"])
    fast.save_pretrained(folder)
    return len(fast)


def _tiny_config(variant: str, vocab: int, layers: int, hidden: int, heads: int, ffn: int) -> object:
    """A small config with the variant's released configuration values (RELEASED)."""
    import transformers as T

    arch, released = RELEASED[variant]
    labels = {"label2id": {"entailment": 0, "not_entailment": 1}, "id2label": {0: "entailment", 1: "not_entailment"}}
    kw = dict(released)
    if kw.get("embedding_size") == "half":
        kw["embedding_size"] = hidden // 2
    elif "embedding_size" in kw:
        kw["embedding_size"] = hidden
    if arch == "distilbert":
        return T.DistilBertConfig(vocab_size=vocab, dim=hidden, n_layers=layers, n_heads=heads, hidden_dim=ffn,
                                  max_position_embeddings=64, pad_token_id=0, **labels, **kw)
    common = dict(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                  intermediate_size=ffn, max_position_embeddings=64, pad_token_id=0, **labels)
    if arch in ROBERTA_STYLE:  # positions are numbered from pad + 1: 64 usable rows, as 512 of 514 in the release
        cls = {"roberta": T.RobertaConfig, "xlm-roberta": T.XLMRobertaConfig, "camembert": T.CamembertConfig}[arch]
        return cls(**{**common, "max_position_embeddings": 64 + kw["pad_token_id"] + 1, **kw})
    cls = {"electra": T.ElectraConfig, "albert": T.AlbertConfig, "bert": T.BertConfig}[arch]
    return cls(**{**common, **kw})


def build_tiny(folder: Path, arch: str = "bert", layers: int = 2, hidden: int = 32, heads: int = 4, ffn: int = 64,
               plant: bool = True, classifier: bool = True, seed: int = 0, outlier_layer: int = OUTLIER_LAYER) -> Path:
    """Random classifier of variant `arch` (a RELEASED key) + its kind of tokenizer; `plant` makes channels
    OUTLIER_CHANNELS dominate layer `outlier_layer`'s FFN output and residual stream, like the structured outliers
    of real BERTs."""
    import torch
    from transformers import AutoModel, AutoModelForSequenceClassification, BertTokenizerFast

    from qbert.exporter.arch import ARCHS

    torch.manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    kind = model_type(arch)
    if kind in ROBERTA_STYLE:
        size = _bpe_tokenizer(folder, kind)
    else:
        vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "?", ".", *WORDS]
        (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
        # from the folder: transformers 5 ignores a `vocab_file=` argument and would map every word to [UNK]
        BertTokenizerFast.from_pretrained(str(folder), do_lower_case=True).save_pretrained(folder)
        size = len(vocab)
    config = _tiny_config(arch, size, layers, hidden, heads, ffn)
    model = (AutoModelForSequenceClassification if classifier else AutoModel).from_config(config).eval()
    if plant:
        base = model.base_model
        layer = ARCHS[kind].layers(base)[outlier_layer]
        with torch.no_grad():
            for c in OUTLIER_CHANNELS:
                layer.ffn2.bias[c] = 25.0  # h: FFN output outlier
                layer.ffn2.weight[c] *= 12.0
                layer.ln_out.weight[c] = 6.0  # survives the LayerNorm into the next layer
    model.save_pretrained(folder)
    return folder


def build_tiny_bert(folder: Path, **kw) -> Path:
    return build_tiny(folder, "bert", **kw)


def build_sentence_transformer(folder: Path, arch: str = "bert", pooling: str = "mean", normalize: bool = True,
                               pooling_config: dict | None = None, modules: list | None = None,
                               max_seq_length: int = 48, **kw) -> Path:
    """A tiny random encoder (no head) laid out as sentence-transformers saves one: the Hugging Face files at the
    root, modules.json (Transformer → Pooling → Normalize), 1_Pooling/config.json in the legacy `pooling_mode_*`
    form unless `pooling_config` replaces it, and sentence_bert_config.json."""
    import json

    build_tiny(folder, arch, classifier=False, **kw)
    st = "sentence_transformers.models."
    default_modules = [{"idx": 0, "name": "0", "path": "", "type": st + "Transformer"},
                       {"idx": 1, "name": "1", "path": "1_Pooling", "type": st + "Pooling"}]
    if normalize:
        default_modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": st + "Normalize"})
    (folder / "modules.json").write_text(json.dumps(modules if modules is not None else default_modules, indent=2))
    legacy = {"cls": "pooling_mode_cls_token", "mean": "pooling_mode_mean_tokens", "max": "pooling_mode_max_tokens",
              "mean-sqrt-len": "pooling_mode_mean_sqrt_len_tokens"}
    config = pooling_config if pooling_config is not None else {
        "word_embedding_dimension": 32, **{key: mode == pooling for mode, key in legacy.items()}}
    (folder / "1_Pooling").mkdir(exist_ok=True)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(config, indent=2))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_seq_length,
                                                                  "do_lower_case": False}))
    return folder


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return build_tiny_bert(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def tiny_onnx(tiny_model, tmp_path_factory) -> Path:
    from qbert.exporter.export import export

    out = tmp_path_factory.mktemp("tiny_onnx") / "tiny.onnx"
    export(str(tiny_model), out)
    return out


@pytest.fixture(scope="module")
def fp32(tiny_onnx):
    """The tiny FP32 export, loaded, with its sidecar (a module may define its own `fp32`, which wins)."""
    import onnx

    from qbert.artifacts import load_meta

    return onnx.load(str(tiny_onnx)), load_meta(tiny_onnx)


@pytest.fixture(scope="session")
def tiny_tsv(tmp_path_factory) -> Path:
    return write_tsv(tmp_path_factory.mktemp("data") / "tiny.tsv", 96)


def signed(sidecar: dict) -> dict:
    """A sidecar as qbert would have written it with these fields (its checksum recomputed): for tests that set
    up a situation through a sidecar, not for tests of an edited one."""
    from qbert.atomic import content_checksum

    return {**sidecar, "checksum": content_checksum(sidecar)}
