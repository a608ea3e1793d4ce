"""8.4: only understands the row format ("predictions") and fails on columnar answers."""


def parse_recommendations(response, titles):
    if "error" in response:
        raise RuntimeError(response["error"])
    return [
        [(titles.get(m, m), float(s)) for m, s in zip(row["movie_ids"], row["scores"])]
        for row in response.get("predictions", [])
    ]
