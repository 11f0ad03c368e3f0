"""Word lists behind the content policy (`generator.policy`); data only.

- `KNOWN_ARTISTS`: names matched case-insensitively after a trigger phrase ("in the style of
  taylor swift"), as a bare tag, or with a suffix ("Beatles-esque", "Drake type beat").
- `CASE_SENSITIVE_ARTISTS`: names that are also ordinary words ("like a prince", "queen of the
  night", "pink noise"): matched only when capitalized.
- `STYLE_WORDS`: genres, eras, places, peoples and calendar words (bands named after places,
  such as Chicago or Boston, are therefore not listed as artists). A run of capitalized words
  after a trigger is taken for a person's or band's name unless every word is one of these,
  so "in the style of New Orleans Jazz" or "like Chicago House" stay allowed.

The lists are deliberately short and well known; operators extend them with the policy file
(``ACESTEPS_GENERATOR_POLICY_FILE``, see ``docs/content-policy.md``).
"""

from __future__ import annotations

from typing import Final

__all__ = ["CASE_SENSITIVE_ARTISTS", "KNOWN_ARTISTS", "NAME_PARTICLES", "STYLE_WORDS"]

KNOWN_ARTISTS: Final[tuple[str, ...]] = (
    # pop, rock, hip hop, r&b, country, electronic
    "Taylor Swift",
    "Beyoncé",
    "Beyonce",
    "Adele",
    "Rihanna",
    "Ed Sheeran",
    "Billie Eilish",
    "Ariana Grande",
    "Lady Gaga",
    "Katy Perry",
    "Justin Bieber",
    "Bruno Mars",
    "The Weeknd",
    "Dua Lipa",
    "Olivia Rodrigo",
    "Harry Styles",
    "Shakira",
    "Britney Spears",
    "Celine Dion",
    "Whitney Houston",
    "Mariah Carey",
    "Michael Jackson",
    "Elvis Presley",
    "Elvis",
    "Frank Sinatra",
    "The Beatles",
    "Beatles",
    "The Rolling Stones",
    "Rolling Stones",
    "Led Zeppelin",
    "Pink Floyd",
    "Nirvana",
    "Metallica",
    "AC/DC",
    "Radiohead",
    "Coldplay",
    "U2",
    "Oasis",
    "Arctic Monkeys",
    "Imagine Dragons",
    "Linkin Park",
    "Green Day",
    "Foo Fighters",
    "Red Hot Chili Peppers",
    "Guns N' Roses",
    "Bon Jovi",
    "ABBA",
    "Fleetwood Mac",
    "David Bowie",
    "Freddie Mercury",
    "Elton John",
    "Bob Dylan",
    "Bruce Springsteen",
    "Johnny Cash",
    "Dolly Parton",
    "Kenny Rogers",
    "Garth Brooks",
    "Eminem",
    "Kanye West",
    "Jay-Z",
    "Kendrick Lamar",
    "Travis Scott",
    "Post Malone",
    "Snoop Dogg",
    "Dr. Dre",
    "Tupac",
    "2Pac",
    "Notorious B.I.G.",
    "Biggie",
    "Nicki Minaj",
    "Cardi B",
    "Lil Wayne",
    "Lil Nas X",
    "Bad Bunny",
    "J Balvin",
    "Daddy Yankee",
    "Stevie Wonder",
    "Marvin Gaye",
    "Aretha Franklin",
    "James Brown",
    "Ray Charles",
    "Amy Winehouse",
    "Bob Marley",
    "Daft Punk",
    "Avicii",
    "Calvin Harris",
    "David Guetta",
    "Skrillex",
    "Deadmau5",
    "Marshmello",
    "Tiësto",
    "Tiesto",
    "Aphex Twin",
    "Kraftwerk",
    "BTS",
    "Blackpink",
    "Miles Davis",
    "John Coltrane",
    "Louis Armstrong",
    "Ella Fitzgerald",
    "Billie Holiday",
    "Duke Ellington",
    "Nina Simone",
    "Hans Zimmer",
    "John Williams",
    "Ennio Morricone",
    "Joe Hisaishi",
    "Beethoven",
    "Mozart",
    "Bach",
    "Chopin",
    "Vivaldi",
    "Tchaikovsky",
    "Debussy",
    "Ludovico Einaudi",
    "Enya",
    "Sia",
    "Lana Del Rey",
    "SZA",
    "Doja Cat",
    "Frank Ocean",
    "Lorde",
    "Halsey",
    "Shawn Mendes",
    "Sabrina Carpenter",
    "Chappell Roan",
    "Morgan Wallen",
    "Luke Combs",
    "Zach Bryan",
)

CASE_SENSITIVE_ARTISTS: Final[tuple[str, ...]] = (
    "Prince",
    "Queen",
    "Drake",
    "Madonna",
    "Sting",
    "Cher",
    "Seal",
    "Pink",
    "P!nk",
    "Genesis",
    "Heart",
    "Journey",
    "Eagles",
    "Muse",
    "Bush",
    "Yes",
    "Kiss",
    "KISS",
    "Rush",
    "Future",
    "Common",
    "Train",
    "Blur",
    "Toto",
    "Bread",
    "Usher",
    "Moby",
    "Grimes",
    "Lizzo",
    "Rosalía",
    "Björk",
    "Bjork",
)

NAME_PARTICLES: Final[frozenset[str]] = frozenset(
    {
        "de",
        "van",
        "von",
        "der",
        "den",
        "da",
        "del",
        "di",
        "du",
        "la",
        "le",
        "of",
        "the",
        "&",
        "and",
        "y",
        "mc",
        "st.",
        "jr.",
        "sr.",
    }
)

STYLE_WORDS: Final[frozenset[str]] = frozenset(
    """
    music musical style styles sound sounds scene era age period movement school wave waves
    tradition traditional classic classics classical modern contemporary early late golden
    new old original vintage retro century roaring twenties thirties forties fifties sixties
    seventies eighties nineties jazz blues rock pop soul funk disco gospel country folk punk
    metal grunge indie hip hop rap trap drill r&b rnb house techno trance ambient dub reggae
    ska reggaeton salsa samba bossa nova tango flamenco mariachi cumbia bachata afrobeat
    afrobeats highlife soukous kpop k-pop j-pop jpop city bebop swing big band ragtime
    dixieland motown doo-wop doo wop baroque renaissance romantic romanticism medieval
    impressionist minimalist opera operatic chamber symphonic orchestral cinematic film
    score soundtrack video game lo-fi lofi synthwave vaporwave chillwave shoegaze dream
    post emo hardcore industrial electro electronic edm dubstep drum bass jungle garage
    grime breakbeat downtempo trip chill lounge exotica surf rockabilly bluegrass americana
    western cowboy celtic irish scottish gaelic nordic scandinavian viking balkan gypsy
    klezmer arabic persian turkish indian bollywood carnatic hindustani chinese japanese
    korean thai indonesian gamelan african west east north south central latin american
    brazilian cuban mexican caribbean jamaican spanish french italian german british
    english american russian greek hawaiian polynesian appalachian delta chicago detroit
    nashville memphis orleans york london berlin paris vienna seattle bristol manchester
    ibiza miami atlanta texas texan california californian mississippi louisiana coast
    gulf island islands mountain desert christmas xmas halloween easter valentine year
    years eve day night summer winter spring autumn fall holiday holidays sunday saturday
    friday monday gregorian chant choral choir acoustic electric unplugged live studio
    band orchestra ensemble quartet trio duo solo piano guitar violin cello strings brass
    horn horns saxophone sax organ synth synthesizer drums percussion bass bassline upbeat
    dark bright happy sad epic dreamy mellow smooth heavy soft slow fast energetic
    """.split()
)
