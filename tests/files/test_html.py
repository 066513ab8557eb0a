"""Uploader HTML reduced to plain text or to the strict minimal-HTML policy."""

from __future__ import annotations

import pytest

from lorabench.files._html import SANITIZE_POLICY_VERSION, html_to_text, sanitize_html

HOSTILE = {
    "script": "<p>ok</p><script>window.__pwned = 1</script>",
    "onerror": "<img src=x onerror=\"fetch('/api/terminals',{method:'POST'})\">after",
    "javascript_href": '<a href="javascript:alert(1)">click</a>',
    "obfuscated_href": '<a href="jav&#x09;ascript:alert(1)">click</a>',
    "commandlinker": '<button data-commandlinker-command="terminal:create-new">go</button>',
    "style": '<div style="position:fixed; inset:0">cover</div>',
    "id": '<a id="MathJax" href="https://example.com/">clobber</a>',
    "iframe": '<iframe src="https://evil.example/"></iframe>frame',
    "svg": '<svg onload="alert(1)"><script>alert(2)</script><text>svgtext</text></svg>',
    "remote_img": '<img src="https://tracker.example/pixel.png">pixel',
}
FORBIDDEN = (
    "<script", "window.__pwned", "onerror", "onload", "javascript:", "jav", "data-commandlinker",
    "terminal:create-new", "style=", "position:fixed", "id=", "mathjax", "<iframe", "evil.example",
    "<svg", "alert(", "<img", "tracker.example", "<button",
)  # fmt: skip


@pytest.mark.parametrize("name", sorted(HOSTILE))
@pytest.mark.parametrize("render", [html_to_text, sanitize_html], ids=["text", "sanitized"])
def test_hostile_markup_is_gone(name, render):
    out = render(HOSTILE[name]).lower()
    for needle in FORBIDDEN:
        assert needle not in out, (name, needle, out)


def test_text_keeps_paragraphs_and_decodes_entities():
    html = (
        "<h2>Usage</h2>\n<p>Use   <b>weight</b> 0.8 &amp; trigger &quot;foo&quot;.</p>"
        "<p>Second<br>line &lt;not a tag&gt; &eacute;&nbsp;x</p>"
        "<ul><li>one</li><li>two</li></ul><p>end</p>"
    )
    assert html_to_text(html) == (
        'Usage\n\nUse weight 0.8 & trigger "foo".\n\nSecond\nline <not a tag> é x\n- one\n- two\n\nend'
    )


def test_text_collapses_blank_runs_and_strips():
    assert html_to_text("<p></p><p></p>\n\n<p>  a </p><div></div><div></div><p>b</p>  ") == "a\n\nb"
    assert html_to_text("plain\ntext   here") == "plain text here"


@pytest.mark.parametrize("empty", [None, ""])
def test_empty_input(empty):
    assert html_to_text(empty) == ""
    assert sanitize_html(empty) == ""


def test_script_content_is_dropped_not_shown_as_text():
    assert html_to_text("<p>a</p><script>var x = '<b>';</script><style>p{}</style><p>b</p>") == "a\n\nb"


def test_sanitize_keeps_allowed_formatting():
    html = "<h1>T</h1><p><strong>s</strong> <em>e</em> <code>c</code></p><ul><li>i</li></ul><hr>"
    assert sanitize_html(html) == html


def test_sanitize_links_get_rel_and_only_absolute_http():
    out = sanitize_html(
        '<a href="https://civitai.com/models/1" title="t" class="c" target="_top">ok</a>'
        '<a href="/api/terminals">rel</a><a href="mailto:x@y">mail</a><a href="data:text/html,x">d</a>'
    )
    assert out == (
        '<a href="https://civitai.com/models/1" title="t" rel="noopener noreferrer nofollow">ok</a>'
        '<a rel="noopener noreferrer nofollow">rel</a><a rel="noopener noreferrer nofollow">mail</a>'
        '<a rel="noopener noreferrer nofollow">d</a>'
    )


def test_sanitize_drops_generic_attributes_and_unknown_tags():
    out = sanitize_html(
        '<p lang="en" title="x" class="c"><span>in</span> <u id="u">x</u><font color="red">f</font></p>'
    )
    assert out == "<p>in <u>x</u>f</p>"


def test_policy_version():
    assert SANITIZE_POLICY_VERSION == 1
