"""9.1: puts only the task's own role in the cluster, so the other roles' processes are unknown."""

import json


def tf_config_for(cluster, task_type, task_index):
    if task_type not in cluster or not 0 <= task_index < len(cluster[task_type]):
        raise ValueError("bad task")
    return json.dumps({"cluster": {task_type: cluster[task_type]}, "task": {"type": task_type, "index": task_index}})
