import pytest
import torch

from abs_ray.errors import ConfigError, LabelFormatError
from abs_ray.ops import PatchLabel, format_patch_label_csv, parse_patch_label_csv

CANONICAL = (
    "info,mask\n"
    "001.Black_footed_Albatross/a.jpg,0110111100001001\n"
    '"with,comma.jpg",1111000000000000\n'
    '"with ""quotes"".jpg",0000000000000001\n'
    "ünïcode/ẞird.png,0000000000000000\n"
)


def _labels(n: int = 5, grid: int = 4) -> list[PatchLabel]:
    g = torch.Generator().manual_seed(1)
    infos = ["plain.jpg", "a,b,c.jpg", 'say "hi".jpg', "multi\nline.jpg", "  spaced  "]
    return [
        PatchLabel(
            infos[i % len(infos)] + str(i), (torch.rand(grid, grid, generator=g) > 0.5).float()
        )
        for i in range(n)
    ]


def test_parse_hand_made_csv():
    labels = parse_patch_label_csv(CANONICAL)
    assert [lab.info for lab in labels] == [
        "001.Black_footed_Albatross/a.jpg",
        "with,comma.jpg",
        'with "quotes".jpg',
        "ünïcode/ẞird.png",
    ]
    first = labels[0].grid
    assert first.shape == (4, 4) and first.dtype == torch.float32
    # row-major, 1 = foreground
    assert first[0].tolist() == [0.0, 1.0, 1.0, 0.0]
    assert first[3].tolist() == [1.0, 0.0, 0.0, 1.0]
    assert labels[2].grid[3, 3] == 1.0 and labels[2].grid.sum() == 1.0


def test_text_round_trip_is_exact():
    assert format_patch_label_csv(parse_patch_label_csv(CANONICAL)) == CANONICAL


def test_label_round_trip_is_exact():
    labels = _labels()
    text = format_patch_label_csv(labels)
    assert parse_patch_label_csv(text) == labels
    assert parse_patch_label_csv(text, grid=4) == labels


def test_round_trip_with_grid_16():
    labels = _labels(n=3, grid=16)
    parsed = parse_patch_label_csv(format_patch_label_csv(labels))
    assert parsed == labels and parsed[0].grid.shape == (16, 16)


def test_bom_blank_lines_and_crlf_are_tolerated():
    text = "\ufeffinfo,mask\r\na.jpg,1000\r\n\r\nb.jpg,0001\r\n"
    labels = parse_patch_label_csv(text)
    assert [lab.info for lab in labels] == ["a.jpg", "b.jpg"]
    assert labels[1].grid.tolist() == [[0.0, 0.0], [0.0, 1.0]]


def test_header_only_gives_no_labels():
    assert parse_patch_label_csv("info,mask\n") == []


GOOD = "info,mask\na.jpg,1000\nb.jpg,0100\n"


@pytest.mark.parametrize(
    ("text", "line", "what"),
    [
        ("", 1, "missing header"),
        ("image,mask\na.jpg,1000\n", 1, "header must be"),
        ("info,mask,extra\na.jpg,1000\n", 1, "header must be"),
        (GOOD + "c.jpg,10000\n", 4, "mask must have 4 characters"),
        (GOOD + "c.jpg,100\n", 4, "mask must have 4 characters"),
        (GOOD + "c.jpg,10a0\n", 4, "only '0' and '1', got 'a' at position 2"),
        (GOOD + "c.jpg,1 00\n", 4, "only '0' and '1'"),
        (GOOD + ",1000\n", 4, "empty info"),
        (GOOD + "   ,1000\n", 4, "empty info"),
        (GOOD + "a.jpg,0000\n", 4, r"duplicate info 'a.jpg' \(first on line 2\)"),
        (GOOD + "c.jpg\n", 4, "expected 2 fields"),
        (GOOD + "c.jpg,1000,1\n", 4, "expected 2 fields"),
        ("info,mask\na.jpg,100\n", 2, "not a perfect square"),
        ("info,mask\na.jpg,\n", 2, "not a perfect square"),
        (GOOD + "\n\nc.jpg,2000\n", 6, "only '0' and '1'"),  # blank lines still count
        ('info,mask\n"two\nlines",1000\nb.jpg,11\n', 4, "mask must have 4"),
    ],
)
def test_bad_rows_name_their_line(text, line, what):
    with pytest.raises(LabelFormatError, match=rf"^line {line}: .*{what}"):
        parse_patch_label_csv(text)


def test_explicit_grid_is_enforced():
    with pytest.raises(LabelFormatError, match=r"line 2: mask must have 9 characters \(grid 3x3\)"):
        parse_patch_label_csv(GOOD, grid=3)


@pytest.mark.parametrize("grid", [0, -1, 2.0, True])
def test_bad_grid_argument_is_config_error(grid):
    with pytest.raises(ConfigError, match="grid must be a positive int"):
        parse_patch_label_csv(GOOD, grid=grid)


def test_non_text_is_rejected():
    with pytest.raises(LabelFormatError, match="must be text"):
        parse_patch_label_csv(b"info,mask\n")


def test_patch_label_equality():
    a = PatchLabel("x", torch.eye(2))
    assert a == PatchLabel("x", torch.eye(2))
    assert a != PatchLabel("y", torch.eye(2))
    assert a != PatchLabel("x", torch.ones(2, 2))
    assert a != PatchLabel("x", torch.eye(3))
    with pytest.raises(TypeError):
        hash(a)


@pytest.mark.parametrize(
    ("labels", "what"),
    [
        ([PatchLabel("a", torch.full((2, 2), 0.5))], "values must be 0 or 1"),
        ([PatchLabel("a", torch.zeros(2, 3))], r"grid must be \(G, G\)"),
        ([PatchLabel("a", torch.zeros(2, 2)), PatchLabel("b", torch.zeros(3, 3))], "differs"),
        ([PatchLabel("a", torch.zeros(2, 2)), PatchLabel("a", torch.ones(2, 2))], "duplicate"),
        ([PatchLabel("", torch.zeros(2, 2))], "empty info"),
        (["a,0000"], "expected PatchLabel"),
    ],
)
def test_format_rejects_what_parse_would_reject(labels, what):
    with pytest.raises(LabelFormatError, match=what):
        format_patch_label_csv(labels)
