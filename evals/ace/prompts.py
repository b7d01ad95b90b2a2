"""Judge prompts and output schemas for ACE grading (Mercor's AI Consumer Index, arXiv:2512.04921).

Every judge call of the upstream grading pipeline (Mercor-Intelligence/apex-evals, ``ace/harness/``)
has a counterpart here, written anew for this project and modelled on the upstream wording:

============================  ======================================================================
prompt (``name``)             upstream call it stands for
============================  ======================================================================
``ace_recommendations``       ``grounding-pipeline.py: extract_recommendations``
``ace_source_map``            ``grounding-pipeline.py: match_citation_to_recommendations`` and
                              ``extract_and_map_response_links`` (one call: sources -> recommendations)
``ace_product_links``         ``autograder.py: Autograder.extract_links_for_product``
``ace_link_product``          ``helpers/purchase_page_verifier.py: verify_purchase_link`` (Product mode)
``ace_link_shop``             ``helpers/purchase_page_verifier.py: verify_purchase_link`` (Shop mode)
``ace_link_gaming``           ``helpers/purchase_page_verifier.py: verify_gaming_link``
``ace_stage1``                ``autograder.py: Autograder.grade_non_grounding_criterion``
``ace_stage1_grounded``       ``autograder.py: Autograder.check_response_text``
``ace_stage2``                ``autograder.py: Autograder.check_grounded_sources`` (per recommendation)
``ace_stage2_holistic``       ``autograder.py: Autograder.check_grounded_sources`` (no recommendations)
============================  ======================================================================

Prompts are :class:`~metis_pytest.judge.JudgePrompt` objects with :class:`string.Template`
placeholders (a literal dollar sign is ``$$``); the judge client appends the JSON schema of the
output model to the system prompt, so the texts describe the fields but do not repeat the schema.

Change a prompt's wording only together with its ``version``, and bump ``PROMPT_VERSION`` (the version
of the whole set, recorded with every ACE score) whenever any prompt or schema changes.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from metis_pytest.judge import JudgePrompt

__all__ = [
    "GROUNDED_STAGE1",
    "LINK_GAMING",
    "LINK_PRODUCT",
    "LINK_SHOP",
    "PRODUCT_LINKS",
    "PROMPTS",
    "PROMPT_VERSION",
    "RECOMMENDATIONS",
    "SOURCE_MAP",
    "STAGE1",
    "STAGE2",
    "STAGE2_HOLISTIC",
    "GroundedStage1Check",
    "LinkCheck",
    "ProductLinks",
    "RecommendationCheck",
    "RecommendationSources",
    "Recommendations",
    "SourceCheck",
    "SourceMap",
    "Stage1Check",
    "prompt_versions",
]

PROMPT_VERSION: str = "1.0.0"


# --------------------------------------------------------------------------- output schemas


class Recommendations(BaseModel):
    """The main recommendations of a response, by name, in the order the response gives them."""

    recommendations: list[str] = Field(
        description="Names of the items the response recommends as answers to the query; [] if none.")


class RecommendationSources(BaseModel):
    number: int = Field(description="The recommendation's number in the numbered list (1-based).")
    sources: list[int] = Field(default_factory=list,
                               description="Numbers of the sources that back this recommendation.")


class SourceMap(BaseModel):
    """Which numbered sources back which numbered recommendation."""

    recommendations: list[RecommendationSources]


class ProductLinks(BaseModel):
    urls: list[str] = Field(description="Every URL the response gives for this recommendation; [] if none.")


class LinkCheck(BaseModel):
    valid: bool = Field(description="Whether the page meets the requirement stated in the instructions.")
    page_type: str = Field(default="unknown", description="What kind of page this is.")
    reason: str = Field(default="", description="A short explanation.")


class Stage1Check(BaseModel):
    passes: bool = Field(description="Whether the response text meets the criterion.")
    reasoning: str = Field(default="", description="Why it passes or fails.")
    evaluation_type: Literal["holistic", "per_recommendation"] = Field(
        description="holistic: about the response as a whole; per_recommendation: about each recommendation.")
    violation_found: bool = False


class RecommendationCheck(BaseModel):
    name: str = Field(description="The recommendation's name exactly as in the canonical list.")
    meets_criterion: bool


class GroundedStage1Check(BaseModel):
    passes: bool = Field(description="Whether the response text meets the criterion.")
    reasoning: str = Field(default="", description="For each recommendation, whether the text states it.")
    evaluation_type: Literal["holistic", "per_product_all", "per_product_any"]
    required_pass_count: int = Field(
        default=-1, description="-1 when every recommendation must meet it, else how many must (1, 2, ...).")
    recommendations_checked: list[RecommendationCheck] = Field(default_factory=list)
    violation_found: bool = False


class SourceCheck(BaseModel):
    verified: bool = Field(description="Whether the sources support the criterion.")
    reason: str = Field(default="", description="Which source(s) confirm or contradict it.")


# --------------------------------------------------------------------------- grounding: recommendations

RECOMMENDATIONS = JudgePrompt(
    name="ace_recommendations",
    version="1.0.0",
    system=(
        "You read an assistant's answer to a consumer's request and list the main things it "
        "recommends: the specific products, shops, recipes, games, strategies, projects or services "
        "offered as the answer to what the user asked for."
    ),
    user="""USER QUERY:
$query

RESPONSE:
$response

First work out what the user actually wants recommended. A request for meta-information ("give me the
link to X", "which article talks about Y") is not a request to recommend X or Y; when the query asks
for both, list only what is recommended.

List an item when the response puts it forward as an answer: numbered or headed entries ("1. ...",
"Option 2: ...", "Top pick: ..."), direct suggestions ("I recommend ...", "Here are ..."), and
best-effort "closest matches" when those are the only concrete suggestions, even with caveats such as
"not a perfect fit".

Do not list:
- details, components or examples mentioned inside a recommendation;
- true fallbacks offered after a primary recommendation ("alternatively ...", "if that fails, try ...");
- items mentioned only for comparison, as background, or as things to avoid;
- generic categories without a specific name;
- an action phrase as its own item: for "contact ABC Shop directly" list "ABC Shop", once.

A meal plan, a recipe or a step-by-step DIY guide is one recommendation, not one per meal, ingredient
or step. Numbered lists are not automatically recommendations: read what each entry is for.

Give the names without labels or numbering ("Option 1 - Product A" -> "Product A"). Return an empty
list only when the response recommends nothing specific (it refuses, gives only general advice, or only
asks questions).""",
)


SOURCE_MAP = JudgePrompt(
    name="ace_source_map",
    version="1.0.0",
    system=(
        "You match an assistant's recommendations to the web sources behind them, so that each "
        "recommendation can later be checked against its own sources."
    ),
    user="""RESPONSE:
$response

RECOMMENDATIONS (numbered):
$recommendations

SOURCES (numbered; the pages the assistant read, then links written in the response):
$sources

For each recommendation, list the numbers of the sources that are about it: a page for that product,
shop, recipe or game, a page the response cites where it discusses that recommendation, or a link the
response gives in that recommendation's section. Use the response text to see which section a link or
citation belongs to; "it", "this one" and prices belong to the recommendation they are written under.
A source may back several recommendations, and a recommendation may have none.

Never attach image links (imgur, .png, .jpg, .jpeg, .gif, .webp) to a recommendation. Include every
recommendation number once, with an empty list when no source is about it.""",
)


# --------------------------------------------------------------------------- link criteria

PRODUCT_LINKS = JudgePrompt(
    name="ace_product_links",
    version="1.0.0",
    system="You pick out the web links an assistant's response gives for one recommendation.",
    user="""RECOMMENDATION: $product

RESPONSE:
$response

List every URL (http:// or https://) that the response gives in connection with "$product"
specifically: in its section, next to its name, or described as its page. Copy each URL exactly as it
is written. Leave out links that belong to other recommendations. Return an empty list if there are
none.""",
)

LINK_PRODUCT = JudgePrompt(
    name="ace_link_product",
    version="1.0.0",
    system="You classify a scraped web page: is it a page where this specific product can be bought?",
    user="""PRODUCT: $name
URL: $url

PAGE CONTENT:
$page

The page is VALID only if it is the product page of "$name" itself, where a shopper can buy this
specific product directly (an "Add to cart", "Buy now" or similar purchase control for it).

It is NOT valid if it is:
- a list of products, search results or a category page, even if they link to purchase pages;
- a review, comparison or article without a direct purchase of this product;
- a shop's general home page;
- an error page, a dead link, or a page about a different product.

Set page_type to one of: product_page, vendor_page, list, search_results, review, general, error.""",
)

LINK_SHOP = JudgePrompt(
    name="ace_link_shop",
    version="1.0.0",
    system="You classify a scraped web page: is it the store page of this vendor?",
    user="""VENDOR / SHOP: $name
URL: $url

PAGE CONTENT:
$page

The page is VALID if it belongs to the store of "$name": the vendor's own shop, brand or product
category page, showing the vendor's branding or product listings, where a shopper can browse and buy
from this vendor.

It is NOT valid if it is:
- the store of a different vendor, or unrelated to "$name";
- generic marketplace search results (unless "$name" is the seller shown);
- a review or comparison page without a link to the vendor;
- an error page or a dead link.

Set page_type to one of: vendor_page, product_page, list, search_results, review, general, error.""",
)

LINK_GAMING = JudgePrompt(
    name="ace_link_gaming",
    version="1.0.0",
    system="You check whether a scraped web page satisfies the link requirement of a grading criterion.",
    user="""GAME / ITEM: $name
URL: $url
CRITERION: $criterion

PAGE CONTENT:
$page

Does this page satisfy the kind of link the criterion asks for? Check both:
1. the URL's domain fits the requirement, and
2. the page content is about this game or item (its own page, not a general page).

For example: "official Nintendo links" needs a nintendo.com (or other official Nintendo) page for the
game itself; "Steam store links" needs store.steampowered.com; "BoardGameGeek entries" needs
boardgamegeek.com; "official links" needs the game's own publisher or developer site, not a third
party; "purchase links" needs a page where the game can be bought; "gameplay video links" needs a video
page showing gameplay. Valid only if both checks pass.

Set page_type to one of: official, store, forum, video, wiki, third_party, other. Mention the domain
and the kind of content in the reason.""",
)


# --------------------------------------------------------------------------- stage 1: the response text

_STRICT_TEXT_RULES = """- Forget anything you know about these items: judge only what the response text says. Treat every
  name as if you had never heard of it.
- A criterion is met for a recommendation only when the text about that recommendation states the
  required fact, or it follows obviously from what is stated. Hints and guesses do not count: "supports
  2+ players" needs words such as "multiplayer", "2 players", "co-op"; "compatible with X" needs X to be
  named as compatible.
- Extra features are fine: "Recommends only MMA gloves" is met by "gloves for MMA and boxing", not by
  "boxing gloves".
- Conditional criteria ("If it recommends A, A must have B"): "available in B", "comes in B" or
  "offered in B" count as recommending B, and stock caveats ("check availability") do not make it fail;
  a recommendation that is not A meets it."""

STAGE1 = JudgePrompt(
    name="ace_stage1",
    version="1.0.0",
    system=(
        "You grade an assistant's response against one criterion, using only the text of the "
        "response. Be strict about what is actually stated, and reasonable about what it means."
    ),
    user=f"""CRITERION: $criterion

RESPONSE:
$response

Rules:
{_STRICT_TEXT_RULES}
- Decide the scope: holistic when the criterion is about the response as a whole (for example "gives
  exactly 3 options"), per_recommendation when it is about each recommendation (for example "all items
  are vegan"). "Only" or "all" means every recommendation must meet it.

Set passes to true if the response meets the criterion, false otherwise, and say why in reasoning.
Set violation_found when some part of the response breaks the criterion.""",
)

GROUNDED_STAGE1 = JudgePrompt(
    name="ace_stage1_grounded",
    version="1.0.0",
    system=(
        "You grade an assistant's response against one criterion, using only the text of the "
        "response, recommendation by recommendation."
    ),
    user=f"""CRITERION: $criterion

RESPONSE:
$response

CANONICAL RECOMMENDATION LIST (evaluate exactly these):
$recommendations

Rules:
{_STRICT_TEXT_RULES}
- Judge each recommendation on the text that describes it alone, not on other recommendations, general
  statements, or what its name suggests.
- Evaluate exactly the recommendations in the canonical list: do not add, drop or rename any. If you
  think the list is wrong, still grade it as given and say so in reasoning. An empty list means the
  response recommended nothing.
- Work out the quantifier:
  * "at least one", "one of" -> evaluation_type per_product_any, required_pass_count 1;
    "at least 2" -> per_product_any, 2; and so on;
  * "all", "only", "each", or no explicit number -> per_product_all, required_pass_count -1. This
    includes "Recommends [a kind of item]" and "Recommends a [item] with [feature]": the "a" is grammar,
    not a count, so every recommendation must match. "One or more of these features" is per
    recommendation and is still per_product_all;
  * a count of the recommendations themselves ("provides 3 options") -> holistic, judged on the
    response as a whole.
- No vacuous passes: if the response gives no recommendation, a criterion about the recommendations'
  features, or one that requires giving something (links, prices), fails.

Set passes as the quantifier requires: at least N meeting it for per_product_any, every one for
per_product_all. List every canonical recommendation in recommendations_checked, with its exact name and
whether the text states the criterion for it.""",
)


# --------------------------------------------------------------------------- stage 2: the sources

STAGE2 = JudgePrompt(
    name="ace_stage2",
    version="1.0.0",
    system=(
        "You check a grading decision against source material, to catch claims that a model made up. "
        "You rely only on the sources given, never on your own knowledge."
    ),
    user="""A model was asked for recommendations. Its response was graded as meeting this criterion:
$criterion

The recommendation (product, shop or item) in question is: $recommendation

Check, using ONLY the source content below, whether "$recommendation" really meets the criterion. For
example: for "Recommends a veterinarian" and "St Barnard's Vets", the sources must show it is a vet; for
"Recommends food-themed games" and "Overcooked! All You Can Eat", that it is a food-themed game; for
"Recommends badminton rackets under $$25", that the racket is a badminton racket costing under $$25; for
"Provides prices for each item", that the item has a price.

It is verified if the criterion holds in AT LEAST ONE source; it does not need every source.

SOURCES:
$sources

Set verified, and give the source(s) that confirm or contradict it in reason.""",
)

STAGE2_HOLISTIC = JudgePrompt(
    name="ace_stage2_holistic",
    version="1.0.0",
    system=(
        "You check whether a criterion is supported by source material, relying only on the sources "
        "given, never on your own knowledge."
    ),
    user="""CRITERION: $criterion

SOURCES:
$sources

Based ONLY on the sources above, is what the criterion states supported? verified is true when the
sources contain information that supports it, false when they do not mention or support it. Name the
source(s) in reason.""",
)


PROMPTS: tuple[JudgePrompt, ...] = (
    RECOMMENDATIONS, SOURCE_MAP, PRODUCT_LINKS, LINK_PRODUCT, LINK_SHOP, LINK_GAMING,
    STAGE1, GROUNDED_STAGE1, STAGE2, STAGE2_HOLISTIC,
)


def prompt_versions() -> dict[str, str]:
    """``{prompt name: version}`` for every ACE judge prompt, plus ``"set"``: ``PROMPT_VERSION``."""
    return {"set": PROMPT_VERSION, **{p.name: p.version for p in PROMPTS}}
