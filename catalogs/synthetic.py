"""The embedded default catalog: synthetic home, furniture and household goods with a real vocabulary gap.

Why synthetic: the environment needs a catalog that installs with the package, builds in seconds
and has labels for every query. Why a vocabulary gap: LESER learns to rewrite queries, which only
pays when the shopper's words and the catalog's words differ. Here they do by construction:

- the catalog writes canonical nouns ("sofa") and feature phrases ("stain resistant"); shoppers
  say "couch", misspell "sofaa" and describe needs ("couch that survives a dog") in words the
  catalog never uses, except for a few products whose copy mentions a need (realistic noise);
- every query is generated from a known intent (class, attribute values, needed features), and
  grades 0..3 come from that truth, not from the text, so an expansion in catalog language
  ("pet friendly fabric sofa") retrieves products a conjunctive engine misses for the query.

Determinism: a single ``random.Random(seed)`` drives everything; tables are tuples and dicts in
written order, and sets are only used for membership or are sorted before any choice.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from functools import cache

from catalogs.model import Catalog, Product, make_catalog

GENERATOR_VERSION: int = 1

# Share of each query kind; the rounding remainder goes to problem queries.
QUERY_MIX: dict[str, float] = {"exact": 0.25, "problem": 0.35, "synonym": 0.25, "misspelled": 0.15}

MAX_RELEVANT_LABELS = 30  # grade-3 and grade-2 products labelled per query
GRADE1_LABELS = 10  # sampled "right class, wrong constraints" or "related class" products
GRADE0_LABELS = 10  # sampled irrelevant products, half of them lookalikes (a title shares a query word)
LOOKALIKE_LABELS = 5
NOISE_RATE = 0.05  # share of products with a needed feature whose copy also names the need
ATTEMPTS_PER_QUERY = 60  # tries to find a new unique query text before a slot is given up

# --------------------------------------------------------------------------------------------
# Shared vocabulary (catalog side)
# --------------------------------------------------------------------------------------------

# canonical colour -> spellings a product may use (one per product)
COLOURS: dict[str, tuple[str, ...]] = {
    "black": ("black",),
    "white": ("white",),
    "grey": ("grey", "gray"),
    "beige": ("beige",),
    "navy": ("navy",),
    "brown": ("brown",),
    "green": ("green",),
    "blue": ("blue",),
    "cream": ("cream",),
    "charcoal": ("charcoal",),
    "taupe": ("taupe",),
    "ivory": ("ivory",),
    "olive": ("olive",),
    "mustard": ("mustard",),
    "blush": ("blush",),
    "teal": ("teal",),
    "burgundy": ("burgundy",),
}

STYLES: tuple[str, ...] = (
    "modern", "mid-century", "scandinavian", "industrial", "farmhouse", "traditional",
    "contemporary", "rustic", "minimalist", "coastal", "bohemian", "art deco",
)  # fmt: skip

BRANDS: tuple[str, ...] = (
    "Aldmere", "Brisvane", "Caldoro", "Dunvika", "Elmora", "Fennoral", "Gravlin", "Hollbeck",
    "Istrova", "Jarnholm", "Kavello", "Lunaro", "Morvane", "Nordell", "Oskelby", "Pellaro",
    "Quillon", "Rastvik", "Solvane", "Tarnwell", "Ulvora", "Vexmoor", "Wendaro", "Ysolde",
    "Zanvik", "Arbelle", "Bexford", "Corvina", "Dravik", "Estrelo", "Falvane", "Glenmora",
    "Hessly", "Ivendal", "Korvell", "Lindarro", "Maravel", "Nestova", "Orrindale", "Prellvik",
)  # fmt: skip
BRANDS_PER_CLASS = 8

WOODS = ("oak", "walnut", "pine", "acacia", "mango wood", "engineered wood")


@dataclass(frozen=True)
class ProductClass:
    """One kind of product: how the catalog names it and how shoppers name it."""

    key: str  # canonical catalog noun, also the class id
    category: str
    nouns: tuple[str, ...]  # catalog-side variants used in titles
    synonyms: tuple[str, ...]  # shopper words the catalog never writes
    short: tuple[str, ...]  # vague heads shoppers use ("chair"), may be shared across classes
    materials: tuple[str, ...]
    sizes: tuple[str, ...]
    features: tuple[str, ...]  # catalog language, 1-2 per product
    rooms: tuple[str, ...]
    uses: tuple[str, ...] = ()
    related: tuple[str, ...] = ()  # classes that partly answer a need for this one
    weight: float = 1.0  # share of the catalog


CLASSES: tuple[ProductClass, ...] = (
    ProductClass(
        "office chair", "Furniture > Office > Office Chairs",
        ("office chair", "task chair", "executive chair"),
        ("computer chair", "work chair", "swivel chair"), ("chair",),
        ("mesh", "leather", "faux leather", "fabric"), ("standard", "compact", "large"),
        ("lumbar support", "adjustable armrests", "breathable mesh back", "headrest", "heavy duty base",
         "soft rubber casters", "tilt lock"),
        ("home office", "office"), ("residential", "commercial grade"), weight=1.3,
    ),
    ProductClass(
        "sofa", "Furniture > Living Room > Sofas",
        ("sofa", "lounge sofa", "upholstered sofa"),
        ("couch", "settee", "davenport"), ("sofa",),
        ("velvet", "linen", "leather", "performance fabric", "boucle", "microfiber"),
        ("2-seater", "3-seater", "4-seater"),
        ("stain resistant", "pet friendly fabric", "pull-out sleeper", "removable washable covers",
         "deep seat", "reversible chaise"),
        ("living room",), related=("recliner",), weight=1.3,
    ),
    ProductClass(
        "recliner", "Furniture > Living Room > Recliners",
        ("recliner", "reclining armchair", "recliner chair"),
        ("easy chair", "lounger", "tv chair"), ("chair",),
        ("leather", "faux leather", "microfiber", "velvet"), ("standard", "oversized"),
        ("power lift", "wall hugger", "heated massage", "rocking base", "stain resistant", "cup holders"),
        ("living room",), related=("sofa",),
    ),
    ProductClass(
        "desk", "Furniture > Office > Desks",
        ("desk", "writing desk", "office desk"),
        ("computer table", "study table", "laptop table", "work table"), ("desk",),
        ("oak", "walnut", "pine", "bamboo", "engineered wood", "metal", "glass"),
        ("40 inch", "48 inch", "55 inch", "63 inch"),
        ("height adjustable", "electric lift", "cable management", "extra wide worktop", "space saving",
         "built-in drawers", "keyboard tray"),
        ("home office", "office"), weight=1.2,
    ),
    ProductClass(
        "dining table", "Furniture > Dining > Dining Tables",
        ("dining table", "dinette table", "pedestal dining table"),
        ("kitchen table", "dinner table", "eating table", "breakfast table"), ("table",),
        ("oak", "walnut", "acacia", "marble", "glass", "pine", "mango wood"),
        ("seats 2", "seats 4", "seats 6", "seats 8"),
        ("extendable leaf", "drop leaf", "heat resistant top", "scratch resistant top",
         "tempered glass top"),
        ("dining room", "kitchen"),
    ),
    ProductClass(
        "dining chair", "Furniture > Dining > Dining Chairs",
        ("dining chair", "side chair", "upholstered dining chair"),
        ("dinner chair", "eating chair", "chairs for the table"), ("chair",),
        ("oak", "walnut", "metal", "velvet", "faux leather", "rattan"),
        ("set of 2", "set of 4", "set of 6"),
        ("padded seat", "stackable", "wipeable vinyl seat", "armrests"),
        ("dining room", "kitchen"), related=("bar stool",),
    ),
    ProductClass(
        "bed frame", "Furniture > Bedroom > Bed Frames",
        ("bed frame", "platform bed", "bed base"),
        ("bedstead", "bed"), ("bed",),
        ("metal", "oak", "pine", "velvet", "linen", "engineered wood"), ("twin", "full", "queen", "king"),
        ("storage drawers", "silent slat system", "upholstered headboard", "no box spring needed"),
        ("bedroom",), related=("mattress",),
    ),
    ProductClass(
        "mattress", "Furniture > Bedroom > Mattresses",
        ("mattress", "hybrid mattress", "foam mattress"),
        ("bed", "futon"), ("bed",),
        ("memory foam", "latex", "innerspring", "pocket coil"),
        ("twin", "full", "queen", "king", "california king"),
        ("cooling gel", "extra firm support", "pressure relief layer", "hypoallergenic cover",
         "motion isolation", "reinforced edge support"),
        ("bedroom",), related=("bed frame",), weight=1.2,
    ),
    ProductClass(
        "pillow", "Bedding > Pillows",
        ("pillow", "bed pillow", "support pillow"),
        ("head cushion", "bed cushion", "sleep pillow"), ("pillow",),
        ("memory foam", "down alternative", "feather", "latex", "buckwheat"), ("standard", "queen", "king"),
        ("cooling gel", "contoured cervical support", "hypoallergenic fill", "adjustable loft",
         "machine washable"),
        ("bedroom",),
    ),
    ProductClass(
        "blanket", "Bedding > Blankets",
        ("blanket", "bed blanket", "sofa blanket"),
        ("throw", "afghan", "lap throw"), ("blanket",),
        ("fleece", "cotton", "wool", "chenille", "faux fur", "cashmere blend"),
        ("50x60 in", "60x80 in", "90x90 in"),
        ("weighted glass beads", "sherpa fleece lining", "electric heated", "breathable cotton weave",
         "machine washable"),
        ("bedroom", "living room"), related=("duvet",),
    ),
    ProductClass(
        "duvet", "Bedding > Duvets",
        ("duvet", "duvet insert", "all-season duvet"),
        ("comforter", "doona", "quilt"), ("duvet",),
        ("down", "down alternative", "microfiber", "silk", "wool"), ("twin", "full", "queen", "king"),
        ("lightweight summer fill", "heavyweight winter fill", "corner ties", "hypoallergenic fill",
         "machine washable"),
        ("bedroom",), related=("blanket",),
    ),
    ProductClass(
        "table lamp", "Lighting > Lamps > Table Lamps",
        ("table lamp", "bedside lamp", "accent lamp"),
        ("reading light", "bedside light", "little lamp"), ("lamp",),
        ("ceramic", "brass", "glass", "metal", "rattan", "marble"), ("18 inch", "24 inch", "28 inch"),
        ("usb charging port", "dimmable", "touch control", "three-way switch", "warm white led bulb"),
        ("bedroom", "living room", "home office"), related=("floor lamp",),
    ),
    ProductClass(
        "floor lamp", "Lighting > Lamps > Floor Lamps",
        ("floor lamp", "standing lamp", "torchiere lamp"),
        ("tall lamp", "pole lamp", "corner light"), ("lamp",),
        ("brass", "metal", "marble", "bamboo", "glass"), ("58 inch", "65 inch", "72 inch"),
        ("arc arm", "dimmable", "torchiere uplight", "adjustable gooseneck", "foot switch"),
        ("living room", "bedroom", "home office"), related=("table lamp",),
    ),
    ProductClass(
        "area rug", "Home Decor > Rugs > Area Rugs",
        ("area rug", "rug", "accent rug"),
        ("carpet", "room carpet", "floor carpet"), ("rug",),
        ("wool", "jute", "polypropylene", "cotton", "viscose", "sisal"),
        ("2x3 ft", "5x7 ft", "8x10 ft", "9x12 ft"),
        ("non-slip backing", "machine washable", "stain resistant", "low pile", "plush shag pile",
         "reversible"),
        ("living room", "bedroom", "dining room", "entryway", "kids room"), ("indoor", "indoor-outdoor"),
        weight=1.2,
    ),
    ProductClass(
        "bookcase", "Furniture > Storage > Bookcases",
        ("bookcase", "bookshelf", "shelving unit"),
        ("book rack", "shelves for books", "book storage"), ("shelf",),
        ("oak", "pine", "walnut", "engineered wood", "metal", "bamboo"), ("3-tier", "5-tier", "6-tier"),
        ("adjustable shelves", "wall anchor kit", "reinforced shelves", "glass doors", "corner design"),
        ("living room", "home office", "kids room"), related=("storage cabinet",),
    ),
    ProductClass(
        "dresser", "Furniture > Bedroom > Dressers",
        ("dresser", "double dresser", "tall dresser"),
        ("bureau", "chest of drawers", "drawer chest"), ("dresser",),
        WOODS, ("3-drawer", "6-drawer", "9-drawer"),
        ("soft close drawers", "anti-tip kit", "dovetail joints", "felt-lined top drawer",
         "extra deep drawers"),
        ("bedroom", "nursery"), related=("nightstand", "wardrobe"),
    ),
    ProductClass(
        "nightstand", "Furniture > Bedroom > Nightstands",
        ("nightstand", "bedside table", "night table"),
        ("bed side table", "night stand", "bedside cabinet"), ("nightstand",),
        WOODS, ("1-drawer", "2-drawer", "3-drawer"),
        ("usb charging port", "built-in outlet", "soft close drawer", "open shelf", "hidden compartment"),
        ("bedroom",), related=("dresser",),
    ),
    ProductClass(
        "curtains", "Home Decor > Window Treatments > Curtains",
        ("curtains", "curtain panels", "window curtains"),
        ("drapes", "draperies", "window drapes"), ("curtains",),
        ("polyester", "linen", "velvet", "cotton", "faux silk"),
        ("52x63 in", "52x84 in", "52x96 in", "52x108 in"),
        ("blackout lining", "thermal insulated", "sound dampening", "light filtering", "grommet top",
         "rod pocket"),
        ("living room", "bedroom", "nursery", "kids room"), weight=1.2,
    ),
    ProductClass(
        "mirror", "Home Decor > Mirrors",
        ("mirror", "wall mirror", "accent mirror"),
        ("looking glass", "vanity glass", "dressing glass"), ("mirror",),
        ("metal", "wood", "rattan", "resin", "brass"), ("24x36 in", "30x40 in", "22x65 in"),
        ("led backlit", "anti-fog", "full length", "beveled edge", "shatterproof"),
        ("bathroom", "bedroom", "entryway", "living room", "kids room"),
    ),
    ProductClass(
        "wardrobe", "Furniture > Bedroom > Wardrobes",
        ("wardrobe", "armoire", "wardrobe cabinet"),
        ("closet", "clothes cupboard", "portable closet"), ("wardrobe",),
        ("oak", "pine", "engineered wood", "metal", "walnut"), ("2-door", "3-door", "4-door"),
        ("full height hanging space", "sliding doors", "built-in drawers", "mirrored doors",
         "lockable doors"),
        ("bedroom", "kids room"), related=("dresser",),
    ),
    ProductClass(
        "bar stool", "Furniture > Dining > Bar Stools",
        ("bar stool", "counter stool", "stool"),
        ("breakfast bar chair", "island chair", "high chair"), ("stool",),
        ("metal", "oak", "faux leather", "rattan", "velvet"), ("24 inch seat", "30 inch seat"),
        ("counter height", "swivel seat", "backrest", "footrest", "gas lift height adjustment"),
        ("kitchen", "dining room"), ("residential", "commercial grade"), related=("dining chair",),
    ),
    ProductClass(
        "bench", "Furniture > Entryway > Benches",
        ("bench", "entryway bench", "accent bench"),
        ("hall seat", "mudroom seat", "long seat"), ("bench",),
        ("oak", "pine", "acacia", "metal", "velvet", "rattan"), ("36 inch", "42 inch", "48 inch"),
        ("shoe storage", "weather resistant", "upholstered top", "lift-top storage"),
        ("entryway", "bedroom", "patio", "dining room"), ("indoor", "outdoor"), related=("ottoman",),
    ),
    ProductClass(
        "storage cabinet", "Furniture > Storage > Storage Cabinets",
        ("storage cabinet", "utility cabinet", "accent cabinet"),
        ("cupboard", "pantry", "storage closet"), ("cabinet",),
        ("engineered wood", "metal", "pine", "bamboo", "oak"), ("small", "medium", "large"),
        ("lockable doors", "adjustable shelves", "rust resistant finish", "space saving", "glass doors"),
        ("kitchen", "bathroom", "garage", "living room"), related=("bookcase", "tv stand"),
    ),
    ProductClass(
        "tv stand", "Furniture > Living Room > TV Stands",
        ("tv stand", "media console", "entertainment center"),
        ("tv table", "television cabinet", "tv bench"), ("stand",),
        ("oak", "walnut", "engineered wood", "metal", "glass"), ("48 inch", "60 inch", "70 inch"),
        ("cable management", "open shelving", "glass doors", "led accent lighting", "fireplace insert"),
        ("living room", "bedroom"), related=("storage cabinet",),
    ),
    ProductClass(
        "coffee table", "Furniture > Living Room > Coffee Tables",
        ("coffee table", "cocktail table", "center table"),
        ("lounge table", "tea table", "front room table"), ("table",),
        ("oak", "walnut", "marble", "glass", "metal", "acacia", "mango wood"), ("small", "medium", "large"),
        ("lift-top", "hidden storage drawer", "rounded corners", "tempered glass top", "nesting design",
         "lower shelf"),
        ("living room",), related=("ottoman",),
    ),
    ProductClass(
        "ottoman", "Furniture > Living Room > Ottomans",
        ("ottoman", "storage ottoman", "pouf"),
        ("footstool", "foot rest", "hassock"), ("ottoman",),
        ("velvet", "linen", "faux leather", "boucle", "jute"), ("small", "medium", "large"),
        ("storage compartment", "tufted top", "tray top", "casters"),
        ("living room", "bedroom"), related=("bench", "coffee table"),
    ),
    ProductClass(
        "shoe rack", "Furniture > Entryway > Shoe Racks",
        ("shoe rack", "shoe organizer", "shoe shelf"),
        ("shoe holder", "shoe tower", "shoe storage"), ("rack",),
        ("metal", "bamboo", "pine", "engineered wood", "fabric"), ("3-tier", "4-tier", "6-tier"),
        ("slim profile", "drip tray", "expandable tiers", "tall boot section"),
        ("entryway", "bedroom"), related=("bench",),
    ),
    ProductClass(
        "bath towel", "Bath > Towels > Bath Towels",
        ("bath towel", "towel", "bath sheet"),
        ("shower towel", "body towel"), ("towel",),
        ("cotton", "egyptian cotton", "turkish cotton", "bamboo", "microfiber", "linen"),
        ("27x54 in", "30x56 in", "35x70 in"),
        ("quick dry", "antimicrobial", "plush 700 gsm", "high absorbency", "zero twist"),
        ("bathroom",),
    ),
    ProductClass(
        "waste bin", "Household > Waste Bins",
        ("waste bin", "pedal bin", "waste basket"),
        ("trash can", "garbage can", "rubbish bin"), ("bin",),
        ("stainless steel", "plastic", "bamboo"), ("8 gallon", "13 gallon", "16 gallon"),
        ("odour-sealing lid", "locking lid", "motion sensor lid", "step pedal", "soft close lid",
         "dual compartment recycling"),
        ("kitchen", "bathroom", "home office"),
    ),
    ProductClass(
        "laundry hamper", "Household > Laundry > Laundry Hampers",
        ("laundry hamper", "laundry basket", "clothes hamper"),
        ("dirty clothes basket", "washing basket", "hamper bag"), ("basket",),
        ("bamboo", "cotton", "wicker", "plastic", "metal"), ("40 litre", "60 litre", "90 litre"),
        ("divided sorter", "ventilated", "carry handles", "removable liner", "lid"),
        ("bedroom", "bathroom", "nursery"),
    ),
)  # fmt: skip

CLASS_BY_KEY: dict[str, ProductClass] = {cls.key: cls for cls in CLASSES}


@dataclass(frozen=True)
class Need:
    """A shopper's problem and the catalog features that solve it.

    ``phrasings`` are shopper language ({noun} takes a class word); each one holds at least one
    word the catalog never writes for this class, so the query alone misses under AND matching.
    """

    cls: str
    phrasings: tuple[str, ...]
    features: tuple[str, ...]  # any one of these fully answers the need
    partial: tuple[str, ...] = ()  # these answer it partly (grade 2)
    noise: str = ""  # a benefit sentence in shopper words a few products carry


NEEDS: tuple[Need, ...] = (
    # office chair
    Need("office chair", ("{noun} for back pain", "{noun} for lower back pain", "{noun} for my bad back",
                          "{noun} that helps with sciatica", "{noun} that won't hurt my back after 8 hours"),
         ("lumbar support",), ("headrest",), "Recommended for anyone with back pain."),
    Need("office chair", ("{noun} for a big guy", "{noun} for heavy people", "{noun} for a 300 pound person",
                          "{noun} that won't break under me"), ("heavy duty base",), (),
         "Rated for heavy people."),
    Need("office chair", ("{noun} that doesn't make me sweaty", "{noun} for hot summers",
                          "{noun} that keeps me from sweating"), ("breathable mesh back",)),
    Need("office chair", ("{noun} that won't scratch hardwood floors", "{noun} safe for wood floors",
                          "quiet rolling {noun}"), ("soft rubber casters",)),
    Need("office chair", ("{noun} for neck pain", "{noun} with somewhere to rest my head"), ("headrest",)),
    # sofa
    Need("sofa", ("{noun} that survives a dog", "{noun} for dog owners", "{noun} my cat can't destroy",
                  "{noun} that holds up to a puppy", "{noun} for a house with cats"),
         ("stain resistant", "pet friendly fabric"), ("removable washable covers",),
         "A favourite with dog owners."),
    Need("sofa", ("{noun} for overnight guests", "{noun} guests can sleep on",
                  "{noun} that turns into a bed for visitors"), ("pull-out sleeper",), (),
         "Handy when overnight guests stay."),
    Need("sofa", ("{noun} for messy toddlers", "{noun} you can just throw the covers in the wash",
                  "{noun} that is easy to keep clean with kids"),
         ("removable washable covers",), ("stain resistant",)),
    Need("sofa", ("{noun} big enough to nap on", "{noun} for tall people to lie down"),
         ("deep seat",), ("reversible chaise",)),
    # recliner
    Need("recliner", ("{noun} for elderly parents", "{noun} that helps grandma get up",
                      "{noun} for seniors with bad knees"), ("power lift",), (),
         "A thoughtful gift for elderly parents."),
    Need("recliner", ("{noun} that fits close to the wall", "{noun} for a tiny apartment"), ("wall hugger",)),
    Need("recliner", ("{noun} for sore muscles", "{noun} that rubs my back"), ("heated massage",)),
    Need("recliner", ("{noun} for nursing a baby", "{noun} to rock the baby to sleep"), ("rocking base",)),
    # desk
    Need("desk", ("{noun} i can stand at", "{noun} to stand while working", "{noun} that goes up and down",
                  "{noun} for sitting and standing"), ("height adjustable", "electric lift"), (),
         "Switch between sitting and standing through the day."),
    Need("desk", ("{noun} that hides all the cords", "{noun} with no messy wires"), ("cable management",)),
    Need("desk", ("{noun} big enough for two monitors", "{noun} for a dual monitor setup",
                  "gaming {noun} for a big setup"), ("extra wide worktop",)),
    Need("desk", ("{noun} for a tiny apartment", "{noun} for a dorm room",
                  "{noun} that fits a cramped corner"), ("space saving",)),
    Need("desk", ("{noun} for typing all day without wrist strain",), ("keyboard tray",)),
    # dining table
    Need("dining table", ("{noun} that seats the whole family for holidays", "{noun} for big family dinners",
                          "{noun} that gets bigger for thanksgiving", "{noun} for hosting christmas dinner"),
         ("extendable leaf",), (), "Room for big family dinners."),
    Need("dining table", ("{noun} for a tiny apartment", "{noun} that folds down when not needed"),
         ("drop leaf",)),
    Need("dining table", ("{noun} i can put hot dishes on", "{noun} that won't get marks from hot pans"),
         ("heat resistant top",)),
    Need("dining table", ("{noun} that survives toddlers", "{noun} kids can't ruin with crayons"),
         ("scratch resistant top",)),
    # dining chair
    Need("dining chair", ("{noun} i can put away after parties", "{noun} for extra guests at parties"),
         ("stackable",)),
    Need("dining chair", ("{noun} for messy kids", "{noun} that can be wiped after spaghetti"),
         ("wipeable vinyl seat",)),
    Need("dining chair", ("comfy {noun} for long dinners",), ("padded seat",)),
    # bed frame
    Need("bed frame", ("{noun} with space underneath for boxes", "{noun} for a small room with no closet"),
         ("storage drawers",)),
    Need("bed frame", ("{noun} that doesn't squeak", "{noun} that won't creak when i roll over"),
         ("silent slat system",)),
    Need("bed frame", ("{noun} so i can skip buying a box spring", "{noun} that works with just a mattress"),
         ("no box spring needed",)),
    Need("bed frame", ("{noun} comfortable to lean against when reading",), ("upholstered headboard",)),
    # mattress
    Need("mattress", ("{noun} that keeps me cool", "{noun} for hot sleepers", "{noun} for night sweats",
                      "{noun} that doesn't trap body heat"), ("cooling gel",), (),
         "Ideal for hot sleepers."),
    Need("mattress", ("{noun} for back pain", "{noun} for a bad back", "{noun} that stops me waking up sore"),
         ("extra firm support",), ("pressure relief layer",)),
    Need("mattress", ("{noun} for side sleepers", "{noun} that doesn't hurt my shoulders"),
         ("pressure relief layer",)),
    Need("mattress", ("{noun} so i don't feel my partner move", "{noun} for couples who toss and turn",
                      "{noun} for a restless partner"), ("motion isolation",), (),
         "Great for a restless partner."),
    Need("mattress", ("{noun} for allergies", "{noun} for dust mite allergy", "{noun} for asthma sufferers"),
         ("hypoallergenic cover",), (), "Suitable for allergies and asthma sufferers."),
    Need("mattress", ("{noun} that doesn't sag when i sit on the edge",), ("reinforced edge support",)),
    # pillow
    Need("pillow", ("{noun} for neck pain", "{noun} for a stiff neck",
                    "{noun} that stops me waking up with a sore neck"),
         ("contoured cervical support",), ("adjustable loft",), "Loved by people with neck pain."),
    Need("pillow", ("{noun} that stays cold", "{noun} for hot sleepers", "{noun} that doesn't get warm"),
         ("cooling gel",), (), "A favourite of hot sleepers."),
    Need("pillow", ("{noun} for allergy sufferers", "{noun} for people allergic to feathers"),
         ("hypoallergenic fill",)),
    # blanket
    Need("blanket", ("{noun} for someone who is always cold", "{noun} for freezing winter nights",
                     "warmest {noun} for a drafty house"), ("sherpa fleece lining", "electric heated")),
    Need("blanket", ("{noun} for anxiety", "{noun} that feels like a hug",
                     "{noun} to help with restless nights"),
         ("weighted glass beads",), (), "Many owners say it helps with anxiety."),
    Need("blanket", ("{noun} for hot summer nights", "{noun} that isn't too hot"),
         ("breathable cotton weave",)),
    # duvet
    Need("duvet", ("{noun} for summer", "{noun} that isn't too heavy in july",
                   "{noun} for sweaty summer nights"), ("lightweight summer fill",)),
    Need("duvet", ("{noun} for a freezing bedroom", "{noun} for cold nights"), ("heavyweight winter fill",)),
    Need("duvet", ("{noun} that doesn't bunch up in the cover",), ("corner ties",)),
    # table lamp
    Need("table lamp", ("{noun} i can charge my phone with", "{noun} with a place to plug in my phone"),
         ("usb charging port",)),
    Need("table lamp", ("{noun} that is easy on the eyes", "{noun} that isn't too bright at night"),
         ("dimmable",), ("warm white led bulb",), "Easy on the eyes at night."),
    Need("table lamp", ("{noun} i can turn on without finding the switch",
                        "{noun} for someone with arthritis"), ("touch control",)),
    # floor lamp
    Need("floor lamp", ("{noun} to brighten a dark corner", "{noun} for a room with no ceiling light"),
         ("torchiere uplight",)),
    Need("floor lamp", ("{noun} that hangs over the couch", "{noun} to read on the sofa"), ("arc arm",)),
    Need("floor lamp", ("{noun} i can point at my book", "{noun} for knitting"), ("adjustable gooseneck",)),
    # area rug
    Need("area rug", ("{noun} that stays put on hardwood floors", "{noun} that won't slide around",
                      "{noun} my grandma won't trip on"), ("non-slip backing",), (),
         "Stays put on hardwood floors."),
    Need("area rug", ("{noun} for a puppy that has accidents", "{noun} i can wash when the dog throws up"),
         ("machine washable",), ("stain resistant",), "Popular with dog owners."),
    Need("area rug", ("{noun} for toddlers who spill", "{noun} that red wine won't ruin"),
         ("stain resistant",), ("machine washable",)),
    Need("area rug", ("{noun} for a busy hallway", "{noun} that won't show wear by the front door"),
         ("low pile",)),
    Need("area rug", ("soft {noun} for kids to play on", "{noun} that feels nice barefoot"),
         ("plush shag pile",)),
    # bookcase
    Need("bookcase", ("{noun} that won't fall over", "{noun} that won't tip onto my kid"),
         ("wall anchor kit",)),
    Need("bookcase", ("{noun} for heavy textbooks", "{noun} that won't sag under encyclopedias",
                      "{noun} for a huge record collection"), ("reinforced shelves",), (),
         "Holds heavy textbooks with ease."),
    Need("bookcase", ("{noun} that keeps dust off my books", "{noun} to show off collectibles without dust"),
         ("glass doors",)),
    Need("bookcase", ("{noun} for an awkward nook",), ("corner design",)),
    # dresser
    Need("dresser", ("{noun} that won't fall on my toddler", "kid safe {noun}",
                     "{noun} a child can't pull over"), ("anti-tip kit",), (),
         "A safe choice for homes with toddlers."),
    Need("dresser", ("{noun} with drawers that don't slam", "quiet {noun} for a baby room"),
         ("soft close drawers",)),
    Need("dresser", ("{noun} with a spot for jewelry", "{noun} to keep my rings and watches"),
         ("felt-lined top drawer",)),
    Need("dresser", ("{noun} for bulky sweaters", "{noun} that holds all my jeans"), ("extra deep drawers",)),
    Need("dresser", ("{noun} that will last for decades", "{noun} that won't fall apart in a move"),
         ("dovetail joints",)),
    # nightstand
    Need("nightstand", ("{noun} to charge my phone overnight", "{noun} with a plug for my phone"),
         ("usb charging port", "built-in outlet")),
    Need("nightstand", ("{noun} with a secret spot for valuables", "{noun} to hide my passport"),
         ("hidden compartment",)),
    Need("nightstand", ("{noun} with space for my books",), ("open shelf",)),
    # curtains
    Need("curtains", ("{noun} for day sleeping", "{noun} for night shift workers",
                      "{noun} to keep the room pitch black", "{noun} so the sun doesn't wake me up"),
         ("blackout lining",), ("thermal insulated",), "Perfect for shift workers who sleep during the day."),
    Need("curtains", ("{noun} that save on heating bills", "{noun} for a drafty window",
                      "{noun} to keep the heat in"), ("thermal insulated",), ("blackout lining",)),
    Need("curtains", ("{noun} to block street noise", "{noun} for a bedroom next to a busy road"),
         ("sound dampening",)),
    Need("curtains", ("{noun} for privacy that still let light in", "{noun} so neighbors can't see in"),
         ("light filtering",)),
    # mirror
    Need("mirror", ("{noun} for doing makeup", "{noun} with good light for shaving"), ("led backlit",)),
    Need("mirror", ("{noun} that stays clear after a shower", "{noun} that doesn't steam up"), ("anti-fog",)),
    Need("mirror", ("{noun} to see my whole outfit", "head to toe {noun}",
                    "{noun} to check my outfit before work"), ("full length",), (),
         "Head to toe reflection."),
    Need("mirror", ("{noun} safe for a toddler", "{noun} that won't break into shards"), ("shatterproof",)),
    # wardrobe
    Need("wardrobe", ("{noun} for long dresses", "{noun} for hanging gowns and coats"),
         ("full height hanging space",)),
    Need("wardrobe", ("{noun} for a tight room where doors can't swing open",), ("sliding doors",)),
    Need("wardrobe", ("{noun} i can check my outfit in",), ("mirrored doors",)),
    # bar stool
    Need("bar stool", ("{noun} for a kitchen island", "stools that fit under my kitchen island"),
         ("counter height",), (), "Sized for a kitchen island."),
    Need("bar stool", ("{noun} with something to lean on", "{noun} comfortable for grandpa"), ("backrest",)),
    Need("bar stool", ("{noun} for short people", "{noun} that goes up and down for kids"),
         ("gas lift height adjustment",)),
    Need("bar stool", ("{noun} that spins",), ("swivel seat",)),
    # bench
    Need("bench", ("{noun} to sit on while putting on shoes", "{noun} by the front door for muddy boots"),
         ("shoe storage",)),
    Need("bench", ("{noun} that can stay outside all winter", "{noun} for the garden that won't rot"),
         ("weather resistant",)),
    Need("bench", ("{noun} to hide the kids toys",), ("lift-top storage",)),
    # storage cabinet
    Need("storage cabinet", ("{noun} to keep kids out of cleaning supplies",
                             "{noun} to keep medicine away from children"), ("lockable doors",)),
    Need("storage cabinet", ("{noun} for a damp garage", "{noun} for the garage that won't go orange"),
         ("rust resistant finish",)),
    Need("storage cabinet", ("{noun} for a tiny bathroom", "{noun} to squeeze beside the toilet"),
         ("space saving",)),
    # tv stand
    Need("tv stand", ("{noun} that hides the cords", "{noun} that hides all the wires"),
         ("cable management",), (), "Hides the cords."),
    Need("tv stand", ("{noun} with a fake fire", "{noun} that makes the room feel cozy in winter"),
         ("fireplace insert",)),
    Need("tv stand", ("{noun} for game consoles that get hot",), ("open shelving",)),
    Need("tv stand", ("{noun} with lights behind it",), ("led accent lighting",)),
    # coffee table
    Need("coffee table", ("{noun} i can eat dinner on from the couch", "{noun} that raises up for my laptop"),
         ("lift-top",)),
    Need("coffee table", ("{noun} safe for toddlers", "{noun} my baby won't bump her head on"),
         ("rounded corners",), (), "Safe for toddlers."),
    Need("coffee table", ("{noun} to hide the remotes and clutter", "{noun} to stash board games"),
         ("hidden storage drawer",), ("lower shelf",)),
    # ottoman
    Need("ottoman", ("{noun} to hide the kids toys", "{noun} to stash extra blankets"),
         ("storage compartment",)),
    Need("ottoman", ("{noun} i can set drinks on",), ("tray top",)),
    # shoe rack
    Need("shoe rack", ("{noun} for a narrow hallway", "{noun} that fits behind a door"), ("slim profile",)),
    Need("shoe rack", ("place to put muddy boots", "{noun} for wet boots", "{noun} for snowy shoes"),
         ("drip tray",), (), "A place to put muddy boots."),
    Need("shoe rack", ("{noun} for a growing sneaker collection",), ("expandable tiers",)),
    # bath towel
    Need("bath towel", ("{noun} that dries fast", "{noun} that doesn't stay damp",
                        "{noun} for a humid bathroom"), ("quick dry",), (), "Dries fast between uses."),
    Need("bath towel", ("{noun} that doesn't get musty", "{noun} that won't smell like mildew"),
         ("antimicrobial",)),
    Need("bath towel", ("fluffy {noun} like a hotel", "{noun} that feels like a spa"), ("plush 700 gsm",)),
    Need("bath towel", ("{noun} that actually soaks up water",), ("high absorbency",)),
    # waste bin
    Need("waste bin", ("{noun} that doesn't smell", "{noun} that keeps the stink in"),
         ("odour-sealing lid",)),
    Need("waste bin", ("{noun} the dog can't open", "{noun} my dog can't get into"), ("locking lid",)),
    Need("waste bin", ("{noun} i can open with my hands full", "{noun} i don't have to touch"),
         ("motion sensor lid",), ("step pedal",)),
    Need("waste bin", ("{noun} that doesn't bang shut",), ("soft close lid",)),
    # laundry hamper
    Need("laundry hamper", ("{noun} to separate whites and darks", "{noun} to split lights and colors"),
         ("divided sorter",)),
    Need("laundry hamper", ("{noun} that doesn't let clothes get smelly",), ("ventilated",)),
    Need("laundry hamper", ("{noun} easy to take to the laundromat",), ("carry handles",)),
)  # fmt: skip

# Common misspellings of class words; other words get a random edit.
MISSPELLINGS: dict[str, tuple[str, ...]] = {
    "chair": ("chiar", "chari", "chaire"), "sofa": ("sofaa", "soffa", "sopha"),
    "couch": ("cauch", "coutch"), "mattress": ("matress", "mattres", "mattess"),
    "dresser": ("dreser", "dressor"), "curtains": ("curtians", "curtins", "curtans"),
    "pillow": ("pilow", "pillo"), "blanket": ("blankit", "blanet"), "wardrobe": ("wardrob", "wardrope"),
    "ottoman": ("otoman", "ottomon"), "recliner": ("recliener", "reclner"),
    "bookcase": ("bookcae", "bookase"), "table": ("tabel", "tabble"), "lamp": ("lmap", "lampp"),
    "towel": ("towl", "towle"), "hamper": ("hampr", "hammper"), "stool": ("stoll", "stol"),
    "mirror": ("miror", "mirrow"), "desk": ("dsek", "deks"), "bench": ("bentch", "bensh"),
    "nightstand": ("nighstand", "nightsand"), "duvet": ("duvett", "duvay"),
    "comforter": ("comfoter", "confort"), "rug": ("rugg", "rgu"), "cabinet": ("cabnet", "cabinnet"),
    "drapes": ("draps", "drappes"),
    "settee": ("setee", "settie"), "bureau": ("bereau", "burea"), "armoire": ("armoir", "amoire"),
    "closet": ("closset", "clostet"), "carpet": ("carpit", "carpett"),
}  # fmt: skip

# --------------------------------------------------------------------------------------------
# Copy templates (catalog language only)
# --------------------------------------------------------------------------------------------

TITLE_TEMPLATES: tuple[str, ...] = (
    "{brand} {style} {noun}, {colour}",
    "{brand} {noun} with {feature} - {colour} {material}",
    "{colour} {material} {noun} by {brand}",
    "{style} {material} {noun} with {feature}",
    "{brand} {size} {noun} in {colour}",
    "{noun} - {style} {colour} {material}, {size}",
    "{brand} {feature} {noun}, {colour}",
    "{brand} {material} {noun}, {style}, {colour}",
)
INTRO_SENTENCES: tuple[str, ...] = (
    "This {style} {noun} from {brand} is made of {material}.",
    "A {style} {noun} in {colour} {material}.",
    "{brand} brings a {style} look to the {room} with this {colour} {noun}.",
    "Crafted from {material}, this {noun} suits a {style} {room}.",
    "{brand} pairs {colour} tones with {material} in this {noun}.",
)
FEATURE_SENTENCES: tuple[str, ...] = (
    "Key features: {features}.",
    "Highlights: {features}.",
    "Details: {features}.",
)
DETAIL_SENTENCES: tuple[str, ...] = (
    "Size: {size}.",
    "Available in {size}.",
    "Made for the {room}.",
    "A good fit for any {room}.",
)
USE_SENTENCES: tuple[str, ...] = ("Rated for {use} use.", "Suitable for {use} settings.")
# Closing sentences by the first level of the category path.
FILLER_SENTENCES: dict[str, tuple[str, ...]] = {
    "Furniture": (
        "Assembly required; hardware included.",
        "Backed by a two-year limited warranty.",
        "Ships flat-packed.",
        "Tool-free assembly in minutes.",
        "Finished by hand for a refined look.",
    ),
    "Bedding": ("Spot treat with a mild detergent.", "Ships vacuum-packed.", "OEKO-TEX certified materials."),
    "Bath": ("OEKO-TEX certified materials.", "Wash before first use.", "Colourfast dyes."),
    "Lighting": ("Bulb included.", "UL listed.", "Six-foot cord with inline plug."),
    "Home Decor": ("Ready to hang.", "Backed by a one-year warranty.", "Spot treat with a mild detergent."),
    "Household": ("BPA-free materials.", "Backed by a one-year limited warranty."),
}
# Features that cannot both be true of one product.
EXCLUSIVE_FEATURES: tuple[tuple[str, str], ...] = (
    ("lightweight summer fill", "heavyweight winter fill"),
    ("extendable leaf", "drop leaf"),
    ("low pile", "plush shag pile"),
    ("blackout lining", "light filtering"),
    ("grommet top", "rod pocket"),
    ("step pedal", "motion sensor lid"),
)
# Catalog-language elaborations of some features (they never use shopper words).
FEATURE_DETAILS: dict[str, str] = {
    "lumbar support": "An adjustable lumbar pad supports the lower spine.",
    "cooling gel": "Gel-infused foam draws warmth away from the body.",
    "blackout lining": "A triple-weave lining blocks up to 99% of outside light.",
    "height adjustable": "A dual-motor frame moves between seated and upright positions.",
    "stain resistant": "The treated weave repels spills.",
    "anti-tip kit": "Includes wall-anchoring hardware.",
    "power lift": "A motor tilts the seat forward to assist rising.",
    "soft close drawers": "Dampened runners close each drawer gently.",
    "usb charging port": "A built-in USB port powers small devices.",
    "pull-out sleeper": "A fold-out mattress opens in seconds.",
    "thermal insulated": "An insulating layer helps regulate room temperature.",
    "weighted glass beads": "Evenly distributed glass beads provide gentle pressure.",
    "non-slip backing": "A rubberized underside grips the surface beneath.",
    "cable management": "An integrated tray routes cables out of sight.",
}
# (class, feature) -> the need's benefit sentence in shopper words, carried by a few products
NOISE: dict[tuple[str, str], str] = {(n.cls, f): n.noise for n in NEEDS if n.noise for f in n.features}
COLOUR_NAMES: tuple[str, ...] = tuple(COLOURS)
EXCLUSIVE = frozenset(EXCLUSIVE_FEATURES)
UPPER_WORDS = {"usb": "USB", "led": "LED", "tv": "TV", "gsm": "GSM"}
SMALL_WORDS = {"with", "in", "by", "of", "and", "for", "the", "a"}


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QueryIntent:
    """What a generated query asks for: the truth its grades come from.

    ``attributes`` are (key, canonical value) pairs a product must have (key "feature" means one
    of the product's features); ``features`` answer the query's need fully, ``partial_features``
    partly. Kinds: "exact", "problem", "synonym", "misspelled".
    """

    kind: str
    class_key: str
    attributes: tuple[tuple[str, str], ...] = ()
    features: tuple[str, ...] = ()
    partial_features: tuple[str, ...] = ()


def generate(seed: int = 0, n_products: int = 10_000, n_queries: int = 2_000) -> Catalog:
    """The synthetic catalog for these arguments; identical for identical arguments.

    Query texts are unique, so beyond roughly 15,000 queries a kind can run out of new texts and
    the catalog holds fewer queries than asked.
    """
    return _build(seed, n_products, n_queries)[0]


def query_intents(seed: int = 0, n_products: int = 10_000, n_queries: int = 2_000) -> dict[str, QueryIntent]:
    """Query id -> the intent behind it, for the catalog ``generate`` returns for the same arguments."""
    return _build(seed, n_products, n_queries)[1]


def query_kinds(seed: int = 0, n_products: int = 10_000, n_queries: int = 2_000) -> dict[str, str]:
    """Query id -> kind ("exact", "problem", "synonym", "misspelled"); kept out of the Catalog itself."""
    return {qid: intent.kind for qid, intent in query_intents(seed, n_products, n_queries).items()}


# --------------------------------------------------------------------------------------------
# Products
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Item:
    """The generator's truth about one product (canonical values, as opposed to its copy)."""

    cls: str
    noun: str
    attrs: dict[str, str]  # canonical values: colour, material, style, room, size, brand, use
    surface: dict[str, str]  # the same values as this product writes them
    features: tuple[str, ...]


def _make_product(rng: random.Random, row: int, cls: ProductClass, brands: list[str]) -> tuple[_Item, Product]:
    colour = _pick(rng, COLOUR_NAMES)
    attrs = {
        "colour": colour,
        "material": _pick(rng, cls.materials),
        "style": _pick(rng, STYLES),
        "room": _pick(rng, cls.rooms),
        "size": _pick(rng, cls.sizes),
        "brand": _pick(rng, brands),
    }
    if cls.uses:
        attrs["use"] = _pick(rng, cls.uses)
    surface = dict(attrs, colour=_pick(rng, COLOURS[colour]))
    features = tuple(rng.sample(cls.features, 2 if rng.random() < 0.45 else 1))
    if features in EXCLUSIVE or features[::-1] in EXCLUSIVE:
        features = features[:1]
    item = _Item(cls.key, _pick(rng, cls.nouns), attrs, surface, features)

    slots = dict(surface, noun=item.noun, feature=_pick(rng, features), features=_and_join(features))
    title = _title_case(_pick(rng, TITLE_TEMPLATES).format(**slots))
    description = " ".join(_description(rng, item, slots))
    attributes = dict(surface, feature=", ".join(features))
    return item, Product(f"syn-{row:06d}", title, description, cls.category, attributes)


def _description(rng: random.Random, item: _Item, slots: dict[str, str]) -> list[str]:
    """One to four sentences: an intro, then a shuffled pick of feature, detail and filler sentences."""
    extra: list[str] = []
    if rng.random() < 0.85:
        extra.append(_pick(rng, FEATURE_SENTENCES).format(**slots))
    details = [FEATURE_DETAILS[f] for f in item.features if f in FEATURE_DETAILS]
    if details and rng.random() < 0.6:
        extra.append(_pick(rng, details))
    if rng.random() < 0.45:
        extra.append(_pick(rng, DETAIL_SENTENCES).format(**slots))
    if "use" in slots and rng.random() < 0.3:
        extra.append(_pick(rng, USE_SENTENCES).format(**slots))
    if rng.random() < 0.3:
        extra.append(_pick(rng, FILLER_SENTENCES[CLASS_BY_KEY[item.cls].category.split(" > ")[0]]))
    rng.shuffle(extra)
    count = rng.randint(0, 3)
    noise = [NOISE[item.cls, f] for f in item.features if (item.cls, f) in NOISE]
    if noise and rng.random() < NOISE_RATE:
        extra.insert(0, noise[0])
        count = max(count, 1)
    return [_sentence_case(_pick(rng, INTRO_SENTENCES).format(**slots)), *extra[:count]]


def _pick(rng: random.Random, options: tuple[str, ...] | list[str]) -> str:
    """``rng.choice`` without its overhead: product copy makes ~20 picks per product."""
    return options[int(rng.random() * len(options))]


def _and_join(words: tuple[str, ...]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def _title_case(text: str) -> str:
    first, *rest = text.split(" ")
    rest = [word if word in SMALL_WORDS else _title_word(word) for word in rest]
    return " ".join([_title_word(first), *rest])


@cache
def _title_word(word: str) -> str:
    return "-".join(UPPER_WORDS.get(part, part[:1].upper() + part[1:]) for part in word.split("-"))


def _sentence_case(text: str) -> str:
    return text[:1].upper() + text[1:]


# --------------------------------------------------------------------------------------------
# Queries
# --------------------------------------------------------------------------------------------

EXACT_PATTERNS: tuple[tuple[str, ...], ...] = (
    ("colour",), ("material",), ("colour", "material"), ("style",), ("feature",), ("brand",),
    ("size",), ("colour", "feature"), ("style", "material"), ("brand", "colour"),
)  # fmt: skip
SYNONYM_MODIFIERS: tuple[str | None, ...] = (None, None, "colour", "colour", "colour", "material", "material",
                                              "style", "size")  # fmt: skip
PROBLEM_MODIFIERS: tuple[str, ...] = ("colour", "colour", "material", "style")
PROBLEM_MODIFIER_RATE = 0.3


class _World:
    """Products plus the indexes query generation and labelling need (rows by class, value, title word)."""

    def __init__(self, items: list[_Item], products: list[Product]) -> None:
        self.items = items
        self.rows_of_class: dict[str, set[int]] = {cls.key: set() for cls in CLASSES}
        self.rows_with: dict[tuple[str, str, str], set[int]] = {}
        self.rows_by_title_term: dict[str, list[int]] = {}
        for row, item in enumerate(items):
            self.rows_of_class[item.cls].add(row)
            for key, value in item.attrs.items():
                self.rows_with.setdefault((item.cls, key, value), set()).add(row)
            for feature in item.features:
                self.rows_with.setdefault((item.cls, "feature", feature), set()).add(row)
        for row, product in enumerate(products):
            for term in dict.fromkeys(_terms(product.title)):
                self.rows_by_title_term.setdefault(term, []).append(row)

    def with_any(self, cls: str, key: str, values: tuple[str, ...]) -> set[int]:
        found: set[int] = set()
        for value in values:
            found |= self.rows_with.get((cls, key, value), set())
        return found


def _make_exact(rng: random.Random, world: _World) -> tuple[str, QueryIntent, int]:
    row = rng.randrange(len(world.items))
    item = world.items[row]
    words, constraints = [], []
    for key in rng.choice(EXACT_PATTERNS):
        if key == "feature":
            value = rng.choice(item.features)
            words.append(value)
            constraints.append(("feature", value))
        else:
            words.append(item.surface[key])
            constraints.append((key, item.attrs[key]))
    text = " ".join([*words, item.noun]).lower()
    return text, QueryIntent("exact", item.cls, tuple(constraints)), row


def _make_synonym(rng: random.Random, world: _World) -> tuple[str, QueryIntent, int]:
    row = rng.randrange(len(world.items))
    item = world.items[row]
    noun = rng.choice(CLASS_BY_KEY[item.cls].synonyms)
    key = rng.choice(SYNONYM_MODIFIERS)
    if key is None:
        return noun, QueryIntent("synonym", item.cls), row
    text = f"{item.surface[key]} {noun}"
    return text, QueryIntent("synonym", item.cls, ((key, item.attrs[key]),)), row


def _make_problem(rng: random.Random, world: _World, need_rows: list[list[int]]) -> tuple[str, QueryIntent, int] | None:
    index = rng.randrange(len(NEEDS))
    need, rows = NEEDS[index], need_rows[index]
    if not rows:
        return None
    row = rng.choice(rows)
    item = world.items[row]
    cls = CLASS_BY_KEY[need.cls]
    noun = rng.choice((cls.key, *cls.synonyms, *cls.short))
    constraints: tuple[tuple[str, str], ...] = ()
    phrasing = rng.choice(need.phrasings)
    if "{noun}" in phrasing and rng.random() < PROBLEM_MODIFIER_RATE:
        key = rng.choice(PROBLEM_MODIFIERS)
        noun = f"{item.surface[key]} {noun}"
        constraints = ((key, item.attrs[key]),)
    intent = QueryIntent("problem", need.cls, constraints, need.features, need.partial)
    return phrasing.format(noun=noun), intent, row


def _make_misspelled(rng: random.Random, world: _World) -> tuple[str, QueryIntent, int] | None:
    maker = _make_exact if rng.random() < 0.5 else _make_synonym
    text, intent, row = maker(rng, world)
    misspelled = _misspell(rng, text)
    if misspelled == text:
        return None
    intent = QueryIntent("misspelled", intent.class_key, intent.attributes)
    return misspelled, intent, row


def _misspell(rng: random.Random, text: str) -> str:
    """Misspell one word: a common misspelling of a class word, else a dropped/doubled/swapped letter."""
    words = text.split(" ")
    known = [i for i, word in enumerate(words) if word in MISSPELLINGS]
    if known and rng.random() < 0.6:
        i = rng.choice(known)
        words[i] = rng.choice(MISSPELLINGS[words[i]])
        return " ".join(words)
    editable = [i for i, word in enumerate(words) if len(word) >= 4 and word.isalpha()]
    if not editable:
        return text
    i = rng.choice(editable)
    word = words[i]
    at = rng.randrange(1, len(word) - 1)
    edit = rng.choice(("drop", "double", "swap", "vowel"))
    if edit == "drop":
        word = word[:at] + word[at + 1 :]
    elif edit == "double":
        word = word[:at] + word[at] + word[at:]
    elif edit == "swap":
        word = word[:at] + word[at + 1] + word[at] + word[at + 2 :]
    else:
        vowels = [j for j, ch in enumerate(word) if ch in "aeiou"]
        if vowels:
            j = rng.choice(vowels)
            word = word[:j] + rng.choice([v for v in "aeiou" if v != word[j]]) + word[j + 1 :]
    words[i] = word
    return " ".join(words)


# --------------------------------------------------------------------------------------------
# Labels
# --------------------------------------------------------------------------------------------


def _grade_sets(world: _World, intent: QueryIntent) -> tuple[list[int], list[int], list[int]]:
    """Rows graded 3, 2 and 1 for an intent, each sorted (grade 0 is everything else)."""
    grade3: set[int] = set()
    grade2: set[int] = set()
    grade1: set[int] = set()
    cls = CLASS_BY_KEY[intent.class_key]
    for key in (cls.key, *cls.related):
        rows = world.rows_of_class[key]
        satisfied = [world.with_any(key, k, (v,)) for k, v in intent.attributes]
        if intent.features:
            satisfied.append(world.with_any(key, "feature", intent.features))
        partly = world.with_any(key, "feature", intent.partial_features)
        every = rows.intersection(*satisfied)
        some = set().union(*satisfied, partly)
        if key == cls.key:
            grade3 |= every
            grade2 |= some - every
            grade1 |= rows - some - every
        else:
            grade2 |= every
            grade1 |= rows - every
    return sorted(grade3), sorted(grade2), sorted(grade1)


def _labels(rng: random.Random, world: _World, text: str, intent: QueryIntent, seed_row: int) -> list[tuple[int, int]]:
    """(row, grade) pairs: the relevant products up to a cap (the seed always), some grade-1 and grade-0."""
    grade3, grade2, grade1 = _grade_sets(world, intent)
    n2 = min(len(grade2), max(MAX_RELEVANT_LABELS // 3, MAX_RELEVANT_LABELS - len(grade3)))
    n3 = min(len(grade3), MAX_RELEVANT_LABELS - n2)
    others3 = [row for row in grade3 if row != seed_row]
    chosen3 = [seed_row, *rng.sample(others3, max(0, min(len(others3), n3 - 1)))]
    labels = [(row, 3) for row in sorted(chosen3)]
    labels += [(row, 2) for row in sorted(rng.sample(grade2, n2))]
    labels += [(row, 1) for row in sorted(rng.sample(grade1, min(GRADE1_LABELS, len(grade1))))]

    allowed = {CLASS_BY_KEY[intent.class_key].key, *CLASS_BY_KEY[intent.class_key].related}
    taken = {row for row, _ in labels}
    negatives: list[int] = []
    terms = [t for t in dict.fromkeys(_terms(text)) if t in world.rows_by_title_term]
    for _ in range(4 * LOOKALIKE_LABELS if terms else 0):
        if len(negatives) >= LOOKALIKE_LABELS:
            break
        row = rng.choice(world.rows_by_title_term[rng.choice(terms)])
        if world.items[row].cls not in allowed and row not in taken:
            negatives.append(row)
            taken.add(row)
    for _ in range(4 * GRADE0_LABELS):
        if len(negatives) >= GRADE0_LABELS:
            break
        row = rng.randrange(len(world.items))
        if world.items[row].cls not in allowed and row not in taken:
            negatives.append(row)
            taken.add(row)
    return labels + [(row, 0) for row in sorted(negatives)]


# --------------------------------------------------------------------------------------------
# Build
# --------------------------------------------------------------------------------------------


def _build(seed: int, n_products: int, n_queries: int) -> tuple[Catalog, dict[str, QueryIntent]]:
    """Products, then queries of each kind in a shuffled order, then labels from the intents."""
    if n_products < 1 or n_queries < 0:
        raise ValueError(f"need n_products >= 1 and n_queries >= 0, got {n_products} and {n_queries}")
    rng = random.Random(seed)
    brands = {cls.key: rng.sample(BRANDS, BRANDS_PER_CLASS) for cls in CLASSES}
    cum_weights, total = [], 0.0
    for cls in CLASSES:
        total += cls.weight
        cum_weights.append(total)
    items, products = [], []
    for row in range(n_products):
        cls = rng.choices(CLASSES, cum_weights=cum_weights)[0]
        item, product = _make_product(rng, row, cls, brands[cls.key])
        items.append(item)
        products.append(product)
    world = _World(items, products)
    need_rows = [sorted(world.with_any(need.cls, "feature", need.features)) for need in NEEDS]

    schedule = [kind for kind, count in _kind_counts(n_queries).items() for _ in range(count)]
    rng.shuffle(schedule)
    queries: dict[str, str] = {}
    intents: dict[str, QueryIntent] = {}
    labels: list[tuple[str, str, float]] = []
    seen: set[str] = set()
    for kind in schedule:
        for _ in range(ATTEMPTS_PER_QUERY):
            if kind == "exact":
                made = _make_exact(rng, world)
            elif kind == "synonym":
                made = _make_synonym(rng, world)
            elif kind == "problem":
                made = _make_problem(rng, world, need_rows)
            else:
                made = _make_misspelled(rng, world)
            if made is None or _normalize(made[0]) in seen:
                continue
            text, intent, seed_row = made
            seen.add(_normalize(text))
            qid = f"q-{len(queries):05d}"
            queries[qid] = text
            intents[qid] = intent
            for row, grade in _labels(rng, world, text, intent, seed_row):
                labels.append((qid, products[row].id, float(grade)))
            break
    catalog = make_catalog("synthetic", products, queries, labels, relevance_threshold=1.0)
    return catalog, intents


def _kind_counts(n_queries: int) -> dict[str, int]:
    counts = {kind: int(share * n_queries) for kind, share in QUERY_MIX.items()}
    counts["problem"] += n_queries - sum(counts.values())
    return counts


def _normalize(text: str) -> str:
    return " ".join(text.lower().split())


# The short English stopword list search engines use (Lucene's, which Tantivy's matches).
STOPWORDS = frozenset(
    (
        "a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "if", "in", "into", "is", "it", "no",
        "not", "of", "on", "or", "such", "that", "the", "their", "then", "there", "these", "they", "this",
        "to", "was", "will", "with",
    )
)  # fmt: skip


def _terms(text: str) -> list[str]:
    """Crude search terms (alphanumeric runs, no stopwords, plurals stripped): enough to find lookalikes."""
    return [_stem(token) for token in re.findall(r"[a-z0-9]+", text.lower()) if token not in STOPWORDS]


@cache
def _stem(token: str) -> str:
    if len(token) > 4 and token.endswith("ies"):
        return token[:-3] + "y"
    if len(token) > 4 and token.endswith(("sses", "ches", "shes", "xes")):
        return token[:-2]
    if len(token) > 3 and token.endswith("s") and not token.endswith(("ss", "us", "is")):
        return token[:-1]
    return token


def _validate_tables() -> None:
    """Fail at import when a need names a class or feature the tables do not have."""
    for need in NEEDS:
        cls = CLASS_BY_KEY[need.cls]
        missing = [f for f in need.features + need.partial if f not in cls.features]
        if missing:
            raise ValueError(f"need {need.phrasings[0]!r}: {cls.key} has no feature {missing}")
    for cls in CLASSES:
        for key in cls.related:
            if key not in CLASS_BY_KEY:
                raise ValueError(f"class {cls.key!r}: unknown related class {key!r}")


_validate_tables()
