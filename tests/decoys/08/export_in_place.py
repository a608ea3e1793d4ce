"""8.2: saves straight into model_dir/<version>, so a polling server can load it half-written."""


def export_version(module, model_dir, version):
    final = Path(model_dir) / str(int(version))
    if final.exists():
        raise FileExistsError(final)
    tf.saved_model.save(module, str(final), signatures={"serving_default": module.serve})
    return final
