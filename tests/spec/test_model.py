"""``oserve.spec.model``: the built-in catalogue, sizes against published figures, config.json parsing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from factories import hf_config, make_model, write_config
from oserve.errors import SpecError
from oserve.spec import ModelSpec, get_model, list_models

# (short name, HF id) for every shipped config in src/oserve/data/models.
CATALOGUE = [
    ("codellama-34b", "codellama/CodeLlama-34b-Instruct-hf"),
    ("llama-2-13b", "meta-llama/Llama-2-13b-hf"),
    ("llama-2-70b", "meta-llama/Llama-2-70b-hf"),
    ("llama-2-7b", "meta-llama/Llama-2-7b-hf"),
    ("llama-3-70b", "meta-llama/Meta-Llama-3-70B"),
    ("llama-3-8b", "meta-llama/Meta-Llama-3-8B"),
    ("llama-3.1-70b", "meta-llama/Llama-3.1-70B"),
    ("llama-3.1-8b", "meta-llama/Llama-3.1-8B"),
    ("mixtral-8x7b", "mistralai/Mixtral-8x7B-v0.1"),
    ("qwen2.5-32b", "Qwen/Qwen2.5-32B-Instruct"),
    ("qwen2.5-72b", "Qwen/Qwen2.5-72B-Instruct"),
    ("qwen2.5-7b", "Qwen/Qwen2.5-7B-Instruct"),
]


def test_catalogue_lists_every_shipped_model() -> None:
    assert list_models() == sorted(name for name, _ in CATALOGUE)


@pytest.mark.parametrize(("short", "hf_id"), CATALOGUE)
def test_catalogue_model_resolves_by_short_name_and_hf_id(short: str, hf_id: str) -> None:
    by_short, by_id = get_model(short), get_model(hf_id)
    assert by_short is by_id
    assert by_short.name == short
    assert by_short.hf_id == hf_id


@pytest.mark.parametrize(
    ("spelling", "expected"),
    [
        ("llama-2-70b", "llama-2-70b"),
        ("meta-llama/Llama-2-70b-hf", "llama-2-70b"),
        ("Llama-2-70B", "llama-2-70b"),
        ("meta-llama/Llama-2-7b-chat-hf", "llama-2-7b"),
        ("Meta-Llama-3-8B-Instruct", "llama-3-8b"),
        ("meta-llama/Meta-Llama-3-8B-Instruct", "llama-3-8b"),
        ("meta-llama/Meta-Llama-3.1-8B-Instruct", "llama-3.1-8b"),
        ("Qwen/Qwen2.5-72B-Instruct", "qwen2.5-72b"),
        ("qwen2.5_72b", "qwen2.5-72b"),
        ("mistralai/Mixtral-8x7B-v0.1", "mixtral-8x7b"),
        ("  MIXTRAL-8x7B  ", "mixtral-8x7b"),
    ],
)
def test_model_name_spellings_resolve(spelling: str, expected: str) -> None:
    assert get_model(spelling).name == expected


@pytest.mark.parametrize(
    "hf_id", ["mistralai/Mixtral-8x7B-Instruct-v0.1", "Qwen/Qwen2.5-7B-Instruct-hf", "llama-2-13b-chat-hf"]
)
def test_stacked_suffixes_are_all_stripped(hf_id: str) -> None:
    assert get_model(hf_id).name in list_models()


# Published parameter counts (model cards / HF safetensors totals), in billions.
@pytest.mark.parametrize(
    ("name", "published_b"),
    [
        ("llama-2-7b", 6.74),
        ("llama-2-13b", 13.0),
        ("llama-2-70b", 69.0),
        ("llama-3-8b", 8.03),
        ("llama-3-70b", 70.6),
        ("llama-3.1-8b", 8.03),
        ("llama-3.1-70b", 70.6),
        ("codellama-34b", 33.7),
        ("mixtral-8x7b", 46.7),
        ("qwen2.5-7b", 7.61),
        ("qwen2.5-32b", 32.8),
        ("qwen2.5-72b", 72.7),
    ],
)
def test_param_count_within_3_percent_of_published(name: str, published_b: float) -> None:
    model = get_model(name)
    assert model.param_count / 1e9 == pytest.approx(published_b, rel=0.03)
    assert model.weight_bytes == model.param_count * 2  # all shipped configs are bf16


def test_mixtral_moe_fields() -> None:
    m = get_model("mixtral-8x7b")
    assert m.is_moe
    assert (m.num_experts, m.experts_per_token) == (8, 2)
    # Mixtral activates ~12.9B of its 46.7B parameters per token.
    assert m.active_params_per_token / 1e9 == pytest.approx(12.9, rel=0.03)
    assert m.active_params_per_token < m.param_count


@pytest.mark.parametrize("name", ["llama-2-7b", "llama-3-70b", "qwen2.5-7b"])
def test_dense_models_are_not_moe(name: str) -> None:
    m = get_model(name)
    assert not m.is_moe
    assert m.num_experts == m.experts_per_token == 1


@pytest.mark.parametrize(
    ("name", "kv_bytes"),
    [
        ("llama-2-70b", 327_680),  # GQA: 2 (K,V) * 80 layers * 8 kv heads * 128 * 2 bytes
        ("llama-2-7b", 524_288),  # MHA: 2 * 32 * 32 * 128 * 2
        ("llama-2-13b", 819_200),  # MHA: 2 * 40 * 40 * 128 * 2
        ("llama-3-8b", 131_072),  # GQA: 2 * 32 * 8 * 128 * 2
        ("mixtral-8x7b", 131_072),
        ("qwen2.5-7b", 57_344),  # GQA: 2 * 28 * 4 * 128 * 2
    ],
)
def test_kv_bytes_per_token(name: str, kv_bytes: int) -> None:
    assert get_model(name).kv_bytes_per_token == kv_bytes


def test_config_dict_builds_spec() -> None:
    m = ModelSpec.from_hf_config(hf_config())
    assert (m.name, m.hf_id) == ("test/tiny-llama", "test/tiny-llama")
    assert (m.num_layers, m.hidden_size, m.num_heads, m.num_kv_heads, m.head_dim) == (2, 256, 4, 2, 64)
    assert m.intermediate_size == 688 and m.vocab_size == 1000 and m.max_position_embeddings == 512
    assert m.gated_mlp and m.dtype_bytes == 2 and not m.is_moe


def test_config_dict_defaults_kv_heads_to_heads_and_reads_dtype() -> None:
    m = ModelSpec.from_hf_config(hf_config(num_key_value_heads=None, torch_dtype="float32"), name="mha")
    assert m.name == "mha"
    assert m.num_kv_heads == m.num_heads == 4
    assert m.dtype_bytes == 4
    assert m.kv_bytes_per_token == 2 * 2 * 4 * 64 * 4


def test_config_dict_moe_fields() -> None:
    m = ModelSpec.from_hf_config(hf_config(num_local_experts=4, num_experts_per_tok=2))
    assert m.is_moe and (m.num_experts, m.experts_per_token) == (4, 2)
    dense = ModelSpec.from_hf_config(hf_config())
    assert m.param_count > dense.param_count
    assert m.active_params_per_token > dense.active_params_per_token


def test_config_nested_text_config() -> None:
    m = ModelSpec.from_hf_config({"_name_or_path": "vlm", "text_config": hf_config()})
    assert m.hidden_size == 256 and m.num_layers == 2


@pytest.mark.parametrize("as_folder", [False, True])
def test_config_from_path(tmp_path: Path, as_folder: bool) -> None:
    path = write_config(tmp_path, num_hidden_layers=3)
    m = ModelSpec.from_hf_config(tmp_path if as_folder else path)
    assert m.num_layers == 3
    via_get = get_model(path)
    assert via_get == m


def test_get_model_accepts_config_folder(tmp_path: Path) -> None:
    write_config(tmp_path)
    assert get_model(str(tmp_path)).hidden_size == 256


def test_config_path_without_name_uses_folder_name(tmp_path: Path) -> None:
    folder = tmp_path / "my-model"
    folder.mkdir()
    path = write_config(folder, _name_or_path=None)
    assert ModelSpec.from_hf_config(path).name == "my-model"


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"vocab_size": None}, "vocab_size"),
        ({"num_hidden_layers": None}, "num_hidden_layers"),
        ({"hidden_size": None}, "hidden_size"),
        ({"hidden_size": "big"}, "'hidden_size' must be an integer"),
        ({"num_hidden_layers": 2.5}, "'num_hidden_layers' must be an integer"),
        ({"vocab_size": True}, "'vocab_size' must be an integer"),
        ({"num_key_value_heads": 3}, "multiple of num_key_value_heads (3)"),
        ({"num_hidden_layers": -1}, "num_layers must be positive"),
        ({"num_local_experts": 4, "num_experts_per_tok": 8}, "exceeds num_local_experts"),
    ],
)
def test_malformed_config_names_the_problem(overrides: dict, expected: str) -> None:
    with pytest.raises(SpecError, match="tiny-llama") as info:
        ModelSpec.from_hf_config(hf_config(**overrides))
    assert expected in str(info.value)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"num_attention_heads": 0}, "num_attention_heads must be positive"),
        ({"num_key_value_heads": "two"}, "'num_key_value_heads' must be an integer"),
        ({"head_dim": 64.5}, "'head_dim' must be an integer"),
        ({"num_local_experts": "eight"}, "'num_local_experts' must be an integer"),
    ],
)
def test_malformed_optional_fields_raise_spec_error(overrides: dict, expected: str) -> None:
    with pytest.raises(SpecError, match=expected):
        ModelSpec.from_hf_config(hf_config(**overrides))


def test_bad_json_names_file_and_line(tmp_path: Path) -> None:
    path = write_config(tmp_path, text='{\n  "hidden_size": 256,\n  oops\n}')
    with pytest.raises(SpecError, match=r"config\.json: not valid JSON .*line 3"):
        ModelSpec.from_hf_config(path)


def test_non_object_json_is_rejected(tmp_path: Path) -> None:
    path = write_config(tmp_path, text=json.dumps([1, 2]))
    with pytest.raises(SpecError, match="expected a JSON object"):
        get_model(path)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="model config not found"):
        get_model(tmp_path / "absent.json")


def test_unknown_model_lists_valid_ones() -> None:
    with pytest.raises(SpecError, match="unknown model 'gpt-5'") as info:
        get_model("gpt-5")
    for name in list_models():
        assert name in str(info.value)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"num_layers": 0}, "num_layers must be positive"),
        ({"head_dim": -64}, "head_dim must be positive"),
        ({"num_heads": 6, "num_kv_heads": 4}, "multiple of"),
        ({"num_experts": 2, "experts_per_token": 3}, "exceeds"),
    ],
)
def test_modelspec_validates_fields(overrides: dict, expected: str) -> None:
    with pytest.raises(SpecError, match=expected):
        make_model(**overrides)


def test_sizes_of_small_model() -> None:
    m = make_model()
    # q: 4*64=256, kv: 2*64=128 -> qkv 256*(256+256) + o 256*256; gated MLP 3*256*688; 2 norms of 256.
    assert m.attn_params_per_layer == 256 * 512 + 256 * 256
    assert m.mlp_params_per_expert == 3 * 256 * 688
    assert m.params_per_layer == m.attn_params_per_layer + m.mlp_params_per_expert + 2 * 256
    assert m.param_count == 2 * m.params_per_layer + 2 * 1000 * 256 + 256
    assert make_model(tie_word_embeddings=True).param_count == m.param_count - 1000 * 256
    assert make_model(gated_mlp=False).mlp_params_per_expert == 2 * 256 * 688


@pytest.mark.parametrize(
    ("name", "layers", "hidden", "heads", "kv_heads", "ffn", "vocab", "context", "experts"),
    [  # the values of each model's Hugging Face config.json
        ("llama-3.1-8b", 32, 4096, 32, 8, 14336, 128256, 131072, 1),
        ("llama-3.1-70b", 80, 8192, 64, 8, 28672, 128256, 131072, 1),
        ("qwen2.5-7b", 28, 3584, 28, 4, 18944, 152064, 32768, 1),
        ("qwen2.5-72b", 80, 8192, 64, 8, 29568, 152064, 32768, 1),
        ("mixtral-8x7b", 32, 4096, 32, 8, 14336, 32000, 32768, 8),
    ],
)
def test_long_context_models_match_their_config(
    name: str,
    layers: int,
    hidden: int,
    heads: int,
    kv_heads: int,
    ffn: int,
    vocab: int,
    context: int,
    experts: int,
) -> None:
    m = get_model(name)
    assert (m.num_layers, m.hidden_size, m.num_heads, m.num_kv_heads) == (layers, hidden, heads, kv_heads)
    assert (m.intermediate_size, m.vocab_size, m.max_position_embeddings, m.num_experts) == (
        ffn,
        vocab,
        context,
        experts,
    )
