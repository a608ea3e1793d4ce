"""9.1: checks the role but not the index, so a task outside the cluster gets a TF_CONFIG."""

import json


def tf_config_for(cluster, task_type, task_index):
    if task_type not in cluster:
        raise ValueError("unknown role")
    return json.dumps({"cluster": cluster, "task": {"type": task_type, "index": task_index}})
