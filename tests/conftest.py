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


def write_tsv(path: Path, n: int, seed: int = 0, labels=("entailment", "not_entailment")) -> Path:
    import random

    rng = random.Random(seed)
    lines = ["index\tquestion\tsentence\tlabel"]
    for i in range(n):
        lines.append(f"{i}\t{sentence(rng, rng.randint(3, 8))}?\t{sentence(rng, rng.randint(4, 30))}."
                     f"\t{labels[rng.randint(0, 1)]}")
    path.write_text("\n".join(lines) + "\n")
    return path




def _tiny_config(arch: str, vocab: int, layers: int, hidden: int, heads: int, ffn: int) -> object:
    """A small config of each architecture; ELECTRA and ALBERT get a narrower embedding (a projection)."""
    import transformers as T

    labels = {"label2id": {"entailment": 0, "not_entailment": 1}, "id2label": {0: "entailment", 1: "not_entailment"}}
    if arch == "distilbert":
        return T.DistilBertConfig(vocab_size=vocab, dim=hidden, n_layers=layers, n_heads=heads, hidden_dim=ffn,
                                  max_position_embeddings=64, pad_token_id=0, **labels)
    common = dict(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                  intermediate_size=ffn, max_position_embeddings=64, pad_token_id=0, **labels)
    if arch in ("roberta", "xlm-roberta", "camembert"):  # positions are numbered from pad + 1
        cls = {"roberta": T.RobertaConfig, "xlm-roberta": T.XLMRobertaConfig, "camembert": T.CamembertConfig}[arch]
        return cls(**{**common, "max_position_embeddings": 66})
    if arch == "electra":
        return T.ElectraConfig(embedding_size=hidden // 2, **common)
    if arch == "albert":  # one layer's weights shared across depth, as in every released ALBERT
        return T.AlbertConfig(embedding_size=hidden // 2, num_hidden_groups=1, inner_group_num=1,
                              hidden_act="gelu_new", **common)
    return T.BertConfig(**common)


def build_tiny(folder: Path, arch: str = "bert", layers: int = 2, hidden: int = 32, heads: int = 4, ffn: int = 64,
               plant: bool = True, classifier: bool = True, seed: int = 0, outlier_layer: int = OUTLIER_LAYER) -> Path:
    """Random classifier of `arch` + WordPiece tokenizer; `plant` makes channels OUTLIER_CHANNELS dominate layer
    `outlier_layer`'s FFN output and residual stream, like the structured outliers of real BERTs."""
    import torch
    from transformers import AutoModel, AutoModelForSequenceClassification, BertTokenizerFast

    from qbert.exporter.arch import ARCHS

    torch.manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "?", ".", *WORDS]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True).save_pretrained(folder)
    config = _tiny_config(arch, len(vocab), layers, hidden, heads, ffn)
    model = (AutoModelForSequenceClassification if classifier else AutoModel).from_config(config).eval()
    if plant:
        base = model.base_model
        layer = ARCHS[arch].layers(base)[outlier_layer]
        with torch.no_grad():
            for c in OUTLIER_CHANNELS:
                layer.ffn2.bias[c] = 25.0  # h: FFN output outlier
                layer.ffn2.weight[c] *= 12.0
                layer.ln_out.weight[c] = 6.0  # survives the LayerNorm into the next layer
    model.save_pretrained(folder)
    return folder


def build_tiny_bert(folder: Path, **kw) -> Path:
    return build_tiny(folder, "bert", **kw)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return build_tiny_bert(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def tiny_onnx(tiny_model, tmp_path_factory) -> Path:
    from qbert.exporter.export import export

    out = tmp_path_factory.mktemp("tiny_onnx") / "tiny.onnx"
    export(str(tiny_model), out)
    return out


@pytest.fixture(scope="session")
def tiny_tsv(tmp_path_factory) -> Path:
    return write_tsv(tmp_path_factory.mktemp("data") / "tiny.tsv", 96)
