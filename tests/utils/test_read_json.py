import pytest

from tfvitmae.utils.files import MAX_JSON_DEPTH, read_json


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"a": ' + "[" * 200_000 + "]" * 200_000 + "}", "is nested deeper than 64 levels"),
        ("[1, 2]", "is not a JSON object: it holds a list"),
        ('"a string"', "is not a JSON object: it holds a str"),
        ('{"a": ', "is not valid JSON"),
        ('{"a": "\udcff"}', "is not UTF-8 text"),
    ],
    ids=["deep", "list", "string", "truncated", "not-utf-8"],
)
def test_read_json_refuses_hostile_files_naming_them(tmp_path, text, message):
    """A config nested 200,000 deep was a RecursionError; a list passed for an object."""
    path = tmp_path / "config.json"
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    with pytest.raises(ValueError, match=message) as error:
        read_json(path)
    assert str(path) in str(error.value)


def test_read_json_skips_brackets_in_strings_and_reads_up_to_its_depth(tmp_path):
    path = tmp_path / "ok.json"
    deep = "[" * (MAX_JSON_DEPTH - 1) + "]" * (MAX_JSON_DEPTH - 1)
    path.write_text('{"a": "[[[{{{\\"", "b": ' + deep + "}")
    assert read_json(path)["a"] == '[[[{{{"'


def test_read_json_refuses_a_file_larger_than_its_budget(tmp_path, monkeypatch):
    from tfvitmae.utils import files

    monkeypatch.setattr(files, "MAX_JSON_BYTES", 10)
    path = tmp_path / "big.json"
    path.write_text('{"a": "0123456789"}')
    with pytest.raises(ValueError, match=r"big\.json is larger than"):
        read_json(path)
