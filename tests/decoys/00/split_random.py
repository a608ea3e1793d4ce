"""0.3: a random split, so training data can come from after the test period (leakage)."""


def temporal_split(ratings, test_fraction=0.2):
    test = ratings.sample(frac=test_fraction, random_state=0)
    return ratings.drop(test.index), test
