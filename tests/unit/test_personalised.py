"""Factoring rendered messages into shared shapes and per-person values (emailkit.providers.personalised)."""

from __future__ import annotations

from emailkit.providers.personalised import Factorer, factor, factor_parts, fill, keys_for


def test_factor_cuts_at_values_and_filling_gives_the_text_back() -> None:
    values = {"name": "Ada", "unsubscribe": "https://x.example/u/AdaTOKEN"}
    text = "Hi Ada, leave at https://x.example/u/AdaTOKEN. Bye Ada."
    shape = factor(text, values)
    # The longer value wins where they overlap: the name inside the URL does not split it.
    assert shape == ("Hi ", "name", ", leave at ", "unsubscribe", ". Bye ", "name", ".")
    assert fill(shape, values) == text


def test_values_too_short_to_be_distinctive_are_not_cut_at() -> None:
    assert factor("width: 12px; 12 items", {"points": "12"}) == ("width: 12px; 12 items",)


def test_two_people_rendered_alike_share_a_shape() -> None:
    first = factor_parts(
        "Hi Ada & co", "<p>Hi Ada &amp; co</p>", {"name": "Ada & co", "name:html": "Ada &amp; co"}
    )
    second = factor_parts("Hi Bob", "<p>Hi Bob</p>", {"name": "Bob"})
    assert first.shapes[0] == second.shapes[0] == ("Hi ", "text:name", "")
    # The HTML part shows the first name escaped; the slot is the same, the values differ.
    assert first.shapes[1] == second.shapes[1] == ("<p>Hi ", "html:name", "</p>")
    assert first.values == {"text:name": "Ada & co", "html:name": "Ada &amp; co"}


def test_a_branch_on_an_attribute_gives_another_shape() -> None:
    plain = factor_parts("Hi Ada", None, {"name": "Ada"})
    gold = factor_parts("Hi Bob, gold member", None, {"name": "Bob"})
    assert plain.shapes != gold.shapes


def test_the_factorer_reuses_a_shape_only_when_it_fills_into_the_very_text() -> None:
    factorer = Factorer()
    first = factorer.parts("Hi Ada, from the News team", None, {"name": "Ada"})
    # "News" also occurs in the template's text: cut alone it would split there, but the known shape fits.
    news = factorer.parts("Hi News, from the News team", None, {"name": "News"})
    assert news.shapes == first.shapes and news.values == {"text:name": "News"}
    # A text that the known shape does not fill into gets its own shape.
    upper = factorer.parts("Hi ADA, from the News team", None, {"name": "Ada"})
    assert upper.shapes != first.shapes
    assert fill(upper.shapes[0] or (), upper.values) == "Hi ADA, from the News team"


def test_keys_are_numbered_in_order_of_first_use() -> None:
    shapes = (("a", "text:name", "b", "text:url", ""), ("c", "html:url", "d", "html:name", ""))
    assert keys_for(shapes, "%ek{}%") == {
        "text:name": "%ek0%",
        "text:url": "%ek1%",
        "html:url": "%ek2%",
        "html:name": "%ek3%",
    }
