"""TF Serving's ``BatchingParameters`` message, for checking batching files in Python.

TF Serving reads ``--batching_parameters_file`` as a text-format
``tensorflow.serving.BatchingParameters`` (defined in
``tensorflow_serving/servables/tensorflow/session_bundle_config.proto``). The
``tensorflow-serving-api`` wheel ships the model-server config protos but not that one, so
this module declares the message's long-standing fields (numbers 1-7, unchanged since the
file's first releases) in a private descriptor pool. Parsing a file with
:func:`parse_batching_parameters` therefore fails on a misspelt field, a wrong type or a
missing ``{ value: ... }`` wrapper, as the model server would.
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format, wrappers_pb2

_F = descriptor_pb2.FieldDescriptorProto
# (name, number, type, wrapper message or None, repeated)
_FIELDS = [
    ("max_batch_size", 1, _F.TYPE_MESSAGE, ".google.protobuf.Int64Value", False),
    ("batch_timeout_micros", 2, _F.TYPE_MESSAGE, ".google.protobuf.Int64Value", False),
    ("max_enqueued_batches", 3, _F.TYPE_MESSAGE, ".google.protobuf.Int64Value", False),
    ("num_batch_threads", 4, _F.TYPE_MESSAGE, ".google.protobuf.Int64Value", False),
    ("thread_pool_name", 5, _F.TYPE_MESSAGE, ".google.protobuf.StringValue", False),
    ("allowed_batch_sizes", 6, _F.TYPE_INT64, None, True),
    ("pad_variable_length_inputs", 7, _F.TYPE_BOOL, None, False),
]


def _message_class():
    pool = descriptor_pool.DescriptorPool()
    wrappers = descriptor_pb2.FileDescriptorProto.FromString(wrappers_pb2.DESCRIPTOR.serialized_pb)
    pool.Add(wrappers)
    file = descriptor_pb2.FileDescriptorProto(
        name="recsys_course/batching_parameters.proto", package="tensorflow.serving",
        syntax="proto3", dependency=[wrappers.name],
    )
    message = file.message_type.add(name="BatchingParameters")
    for name, number, kind, type_name, repeated in _FIELDS:
        field = message.field.add(name=name, number=number, type=kind,
                                  label=_F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL)
        if type_name:
            field.type_name = type_name
    pool.Add(file)
    descriptor = pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters")
    return message_factory.GetMessageClass(descriptor)


BatchingParameters = _message_class()


def parse_batching_parameters(text: str):
    """Parse a batching parameters file's text; raises ``text_format.ParseError`` with the
    line and column of the first problem."""
    return text_format.Parse(text, BatchingParameters())
