"""8.3: puts the columnar object under "instances" instead of one object per example."""


def predict_body(features, layout="rows", signature_name=None):
    columns = {
        name: [v.item() if isinstance(v, np.generic) else v for v in values]
        for name, values in features.items()
    }
    columns = {n: [v.decode() if isinstance(v, bytes) else v for v in vs] for n, vs in columns.items()}
    body = {"instances" if layout == "rows" else "inputs": columns}
    if signature_name is not None:
        body["signature_name"] = signature_name
    return body
