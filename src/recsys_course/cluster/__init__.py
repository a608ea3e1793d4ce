"""Small TensorFlow clusters on 127.0.0.1 for lesson 09: starting and stopping the tasks
(``launch``), the multi-worker two-tower job and the parameter-server job that run in
them, the task lifetime limit (``lifetime``), the TFRecord shards they read
(``tfrecords``), and several replicas in one process on logical CPU devices (``replicas``)."""
