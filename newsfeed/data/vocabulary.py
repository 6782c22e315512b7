"""Vocabularies the simulator draws posts and users from."""

from __future__ import annotations

TOPICS: dict[str, tuple[list[str], list[str]]] = {
    # topic: (words used in post text, hashtags)
    "politics": (
        "election vote senate policy minister campaign debate law parliament reform tax budget "
        "governor poll coalition referendum candidate congress mayor diplomacy".split(),
        ["#election", "#politics", "#vote", "#policy", "#debate"],
    ),
    "sports": (
        "match goal league team coach season score playoff championship stadium striker "
        "tournament referee transfer medal sprint marathon derby keeper final".split(),
        ["#football", "#sports", "#matchday", "#goal", "#olympics"],
    ),
    "technology": (
        "software startup chip cloud app developer code release robot battery smartphone "
        "algorithm database open source security update laptop gadget network".split(),
        ["#tech", "#ai", "#coding", "#startup", "#gadgets"],
    ),
    "music": (
        "album song concert tour band guitar singer playlist festival vinyl lyrics drummer "
        "chorus single remix gig orchestra melody studio encore".split(),
        ["#music", "#nowplaying", "#concert", "#newmusic", "#livemusic"],
    ),
    "movies": (
        "film trailer director actor premiere sequel cinema screenplay oscar cast scene "
        "box office streaming series episode documentary thriller comedy drama".split(),
        ["#movies", "#film", "#cinema", "#tv", "#streaming"],
    ),
    "food": (
        "recipe dinner pasta bakery chef restaurant spicy dessert coffee brunch vegan "
        "noodles grill pizza salad soup taste kitchen flavour cake".split(),
        ["#food", "#foodie", "#recipe", "#yum", "#cooking"],
    ),
    "travel": (
        "trip flight beach mountain hotel passport island hiking city tour museum road "
        "sunset backpack train cruise lake village journey coast".split(),
        ["#travel", "#wanderlust", "#vacation", "#roadtrip", "#explore"],
    ),
    "science": (
        "study research telescope planet cell experiment climate species physics fossil "
        "vaccine genome ocean particle lab discovery orbit molecule data".split(),
        ["#science", "#space", "#research", "#climate", "#biology"],
    ),
    "fashion": (
        "outfit dress sneakers style designer runway jacket vintage collection trend denim "
        "boots accessories model fabric season look wardrobe tailor".split(),
        ["#fashion", "#style", "#ootd", "#streetstyle", "#design"],
    ),
    "gaming": (
        "game console level boss quest multiplayer esports patch controller speedrun raid "
        "arcade guild stream loot character sandbox pixel indie".split(),
        ["#gaming", "#gamer", "#esports", "#indiegame", "#twitch"],
    ),
    "health": (
        "workout sleep yoga running nutrition doctor therapy stretch cardio wellness "
        "meditation protein clinic habit recovery hydration gym strength".split(),
        ["#health", "#fitness", "#wellness", "#yoga", "#running"],
    ),
    "finance": (
        "market stocks inflation bank savings crypto investor dividend rates mortgage "
        "earnings economy fund trading bond pension budget startup shares".split(),
        ["#finance", "#investing", "#stocks", "#money", "#crypto"],
    ),
}

COMMON_WORDS: list[str] = (
    "the a new today this my our big great just really best first look about after week "
    "time people love more know think day year world here check out amazing big story".split()
)

# country: (weight, language, timezone)
COUNTRIES: dict[str, tuple[float, str, str]] = {
    "US": (0.30, "en", "America/New_York"),
    "GB": (0.10, "en", "Europe/London"),
    "IN": (0.14, "en", "Asia/Kolkata"),
    "BR": (0.10, "pt", "America/Sao_Paulo"),
    "DE": (0.08, "de", "Europe/Berlin"),
    "FR": (0.07, "fr", "Europe/Paris"),
    "JP": (0.06, "ja", "Asia/Tokyo"),
    "MX": (0.06, "es", "America/Mexico_City"),
    "NG": (0.05, "en", "Africa/Lagos"),
    "AU": (0.04, "en", "Australia/Sydney"),
}
