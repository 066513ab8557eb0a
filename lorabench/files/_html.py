"""Uploader-written HTML (Civitai descriptions) made safe: plain text or strict minimal HTML.

All security work is done by :mod:`nh3` (the Rust ammonia sanitizer); this module only
chooses the policy. Two outputs exist (security-reliability.md §1, rule 2):

* :func:`html_to_text` — the default: every tag stripped, entities decoded, paragraph and
  list structure kept as line breaks. Display it with ``textContent``, never as HTML.
* :func:`sanitize_html` — the opt-in rich view: a small allow-list of formatting tags, links
  restricted to absolute ``http(s)`` URLs with ``rel="noopener noreferrer nofollow"``, no
  images, no ``style``/``id``/``class``/``data-*`` attributes. Store the raw HTML and sanitize
  at render time; :data:`SANITIZE_POLICY_VERSION` changes whenever this policy does.
"""

from __future__ import annotations

import html as _html_lib
import re

import nh3

__all__ = [
    "SANITIZE_POLICY_VERSION",
    "html_to_text",
    "sanitize_html",
]

SANITIZE_POLICY_VERSION = 1
"""Version of the :func:`sanitize_html` policy; bump it whenever the allow-lists change."""

_ALLOWED_TAGS: frozenset[str] = frozenset(
    {
        "p", "br", "strong", "b", "em", "i", "u", "s", "ul", "ol", "li",
        "blockquote", "code", "pre", "h1", "h2", "h3", "h4", "a", "hr",
    }
)  # fmt: skip
_ALLOWED_ATTRIBUTES: dict[str, set[str]] = {"*": set(), "a": {"href", "title"}}
_URL_SCHEMES: frozenset[str] = frozenset({"http", "https"})
_LINK_REL = "noopener noreferrer nofollow"

# Elements whose *content* is dropped along with the tag (never shown as text either).
_DROP_CONTENT_TAGS: frozenset[str] = frozenset(
    {
        "script", "style", "noscript", "template", "iframe", "frame", "frameset", "object",
        "embed", "applet", "svg", "math", "textarea", "select", "title", "head", "audio",
        "video", "canvas", "xmp", "noembed", "noframes", "plaintext",
    }
)  # fmt: skip

# Only used to insert line breaks around block-level tags *before* nh3 strips them; the
# sanitizing itself is nh3's job.
_BLOCK_TAG = re.compile(
    r"<\s*/?\s*(?:p|div|ul|ol|h[1-6]|blockquote|pre|tr|table|section|article|hr|dt|dd)\b",
    re.IGNORECASE,
)
_BREAK_TAG = re.compile(r"<\s*br\b", re.IGNORECASE)
_LIST_ITEM = re.compile(r"<\s*li\b", re.IGNORECASE)
_LIST_ITEM_END = re.compile(r"<\s*/\s*li\b", re.IGNORECASE)
_SOURCE_WHITESPACE = re.compile(r"\s+")
_SPACES = re.compile(r"[ \t\f\v\u00a0]+")
_BLANK_RUNS = re.compile(r"\n{3,}")


def html_to_text(html: str | None) -> str:
    """Reduce uploader HTML to plain text for display.

    Block tags (``<p>``, ``<div>``, headings, ``<li>``, ``<br>``…) become line breaks so
    paragraphs survive; list items get a ``"- "`` prefix. Tags are stripped by
    ``nh3.clean(html, tags=set())`` (scripts, styles, iframes, SVG… with their content),
    entities are decoded, runs of blank lines collapse to one, and the result is stripped.

    The result is *text*: it may legitimately contain ``<`` (from ``&lt;``) and must be
    shown with ``textContent``, never inserted as HTML.
    """
    if not html:
        return ""
    text = str(html)
    # Source whitespace is insignificant in HTML; collapse it so only tags make breaks.
    text = _SOURCE_WHITESPACE.sub(" ", text)
    text = _LIST_ITEM.sub(lambda m: "\n- " + m.group(0), text)
    text = _LIST_ITEM_END.sub(lambda m: "\n" + m.group(0), text)
    text = _BLOCK_TAG.sub(lambda m: "\n\n" + m.group(0), text)
    text = _BREAK_TAG.sub(lambda m: "\n" + m.group(0), text)
    cleaned = nh3.clean(text, tags=set(), clean_content_tags=set(_DROP_CONTENT_TAGS))
    plain = _html_lib.unescape(cleaned)
    lines = [_SPACES.sub(" ", line).strip() for line in plain.split("\n")]
    joined = "\n".join(lines)
    # A list item directly after a paragraph break keeps a single newline between items.
    joined = re.sub(r"\n\n+(- )", r"\n\1", joined)
    return _BLANK_RUNS.sub("\n\n", joined).strip()


def _keep_attribute(tag: str, attribute: str, value: str) -> str | None:
    """Only absolute http(s) links survive; relative URLs would resolve inside Jupyter."""
    if tag == "a" and attribute == "href":
        lowered = value.strip().lower()
        if not lowered.startswith(("http://", "https://")):
            return None
        return value.strip()
    return value


def sanitize_html(html: str | None) -> str:
    """Sanitize uploader HTML under the strict minimal policy (version 1).

    Tags ``p br strong b em i u s ul ol li blockquote code pre h1 h2 h3 h4 a hr``; only
    ``a`` carries attributes (``href``, ``title``); ``href`` must be an absolute ``http`` or
    ``https`` URL; every link gets ``rel="noopener noreferrer nofollow"``. Images, styles,
    ids, classes, ``data-*`` and event-handler attributes are removed; scripts, iframes and
    SVG are removed with their content. Show the result only inside a sandboxed iframe.
    """
    if not html:
        return ""
    return nh3.clean(
        str(html),
        tags=set(_ALLOWED_TAGS),
        clean_content_tags=set(_DROP_CONTENT_TAGS),
        attributes={key: set(value) for key, value in _ALLOWED_ATTRIBUTES.items()},
        attribute_filter=_keep_attribute,
        url_schemes=set(_URL_SCHEMES),
        link_rel=_LINK_REL,
        strip_comments=True,
    )
