"""Site-name contract: parsing, wildcards, ranges and the errors users see."""

from __future__ import annotations

import pytest

from workbench.hooks import Site, SiteError, SiteKind, parse_sites


def test_wildcard_and_range_expand_sorted_and_unique() -> None:
    sites = parse_sites(["blocks.*.hook_resid_post", "blocks.1-2.attn.hook_z", "blocks.1.hook_resid_post"], 3, 4)
    assert [site.name for site in sites] == [
        "blocks.0.hook_resid_post",
        "blocks.1.hook_resid_post",
        "blocks.1.attn.hook_z",
        "blocks.2.hook_resid_post",
        "blocks.2.attn.hook_z",
    ]


def test_pattern_needs_heads_and_keeps_them() -> None:
    (site,) = parse_sites("blocks.0.attn.hook_pattern[3,1]", 2, 4)
    assert site == Site(0, SiteKind.PATTERN, (1, 3))
    assert site.name == "blocks.0.attn.hook_pattern[1,3]"
    with pytest.raises(SiteError, match=r"name the heads, e.g. blocks.0.attn.hook_pattern\[0,3\]"):
        parse_sites("blocks.0.attn.hook_pattern", 2, 4)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("blocks.0.hook_resid", "unknown site 'blocks.0.hook_resid'; valid forms: blocks.{l}.hook_resid_pre"),
        ("resid_post", "unknown site"),
        ("blocks.5.hook_resid_post", "layer 5 out of range; the model has layers 0-1"),
        ("blocks.0-9.hook_mlp_out", "layer 2 out of range"),
        ("blocks.1-0.hook_mlp_out", "empty layer range 1-0"),
        ("blocks.0.attn.hook_pattern[7]", "head 7 out of range; the model has heads 0-3"),
        ("blocks.0.attn.hook_z[1]", "only attn.hook_pattern takes a head list"),
    ],
)
def test_bad_names_give_one_line_errors(name: str, message: str) -> None:
    with pytest.raises(SiteError) as caught:
        parse_sites(name, 2, 4)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_empty_request_is_an_error() -> None:
    with pytest.raises(SiteError, match="no sites requested"):
        parse_sites([], 2, 4)
