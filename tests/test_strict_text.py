"""The one-pass UTF-8 check of a serialized model agrees with a walk over every string field."""

from __future__ import annotations

import onnx
import pytest
from helpers import embedding_mlp, if_subgraph_model, save
from hypothesis import given, settings
from hypothesis import strategies as st

from olive_bf16_pass import ConversionError, convert_file
from olive_bf16_pass.inspection import inspect_model
from olive_bf16_pass.strict_text import all_text_is_utf8, invalid_utf8
from olive_bf16_pass.validation import is_repeated

_BAD = [b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\xe2\x82"]  # no UTF-8 holds these


def _mark(model: onnx.ModelProto) -> int:
    """Give every name, op type, doc string and key in the model a unique marker; return how many."""
    from google.protobuf.descriptor import FieldDescriptor

    count = 0
    stack = [model]
    while stack:
        msg = stack.pop()
        for field in msg.DESCRIPTOR.fields:
            repeated = is_repeated(field)
            if field.type == FieldDescriptor.TYPE_MESSAGE:
                if repeated:
                    stack.extend(getattr(msg, field.name))
                elif msg.HasField(field.name):
                    stack.append(getattr(msg, field.name))
            elif field.type == FieldDescriptor.TYPE_STRING:
                values = getattr(msg, field.name)
                if repeated:
                    for i in range(len(values)):
                        values[i] = f"T{count:05d}"
                        count += 1
                elif values:
                    setattr(msg, field.name, f"T{count:05d}")
                    count += 1
    return count


def _model() -> onnx.ModelProto:
    model = if_subgraph_model()
    model.doc_string, model.graph.doc_string = "doc", "doc"
    model.metadata_props.add(key="k", value="v")
    model.graph.initializer.extend(embedding_mlp().graph.initializer[:1])
    return model


def test_a_model_of_text_is_utf8_and_any_field_spoilt_is_found():
    model = _model()
    assert all_text_is_utf8(model.SerializeToString())
    total = _mark(model)
    data = model.SerializeToString()
    assert total > 20 and all_text_is_utf8(data)
    for i in range(total):  # every text field, one at a time: graph, subgraph, node, attribute, tensor, metadata
        marker = f"T{i:05d}".encode()
        assert data.count(marker) == 1
        spoilt = data.replace(marker, b"T" + _BAD[i % len(_BAD)] + marker[1 + len(_BAD[i % len(_BAD)]):])
        assert not all_text_is_utf8(spoilt), marker
        parsed = onnx.ModelProto()
        parsed.ParseFromString(spoilt)  # onnx itself (proto2) takes it: only the check tells
        assert invalid_utf8(parsed) is not None


@settings(max_examples=60, deadline=None)
@given(st.binary(min_size=1, max_size=6), st.integers(min_value=0))
def test_agrees_with_the_field_walk_for_any_bytes_in_any_text_field(payload, which):
    model = _model()
    total = _mark(model)
    data = model.SerializeToString()
    marker = f"T{which % total:05d}".encode()
    spoilt = data.replace(marker, payload.ljust(6, b"a")[:6])  # same length: the framing stays valid
    parsed = onnx.ModelProto()
    parsed.ParseFromString(spoilt)
    assert all_text_is_utf8(spoilt) == (invalid_utf8(parsed) is None)


def test_bytes_fields_are_not_text(tmp_path):
    """raw_data, string_data and an attribute's ``s`` are bytes in ONNX: anything goes there."""
    model = _model()
    node = model.graph.node[0]
    node.attribute.add(name="blob", type=onnx.AttributeProto.STRING, s=b"\xff\xfe")
    model.graph.initializer.add(name="s", data_type=onnx.TensorProto.STRING, dims=[1], string_data=[b"\xff"])
    assert all_text_is_utf8(model.SerializeToString())


def test_bad_text_outside_names_is_refused_by_name(tmp_path):
    """A doc string that is not UTF-8: protobuf cannot write it back, so the field is named, not a codec error."""
    model = embedding_mlp()
    model.doc_string = "DOCX"
    data = model.SerializeToString().replace(b"DOCX", b"\xff\xfeCX")
    assert not all_text_is_utf8(data)
    src = tmp_path / "in.onnx"
    src.write_bytes(data)
    with pytest.raises(ConversionError, match=r"text field of the model is not valid UTF-8 \(model.doc_string = "):
        convert_file(src, tmp_path / "out.onnx")
    with pytest.raises(ConversionError, match="model.doc_string"):
        inspect_model(src)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.onnx"] and src.read_bytes() == data


def test_not_a_model_is_not_text():
    assert not all_text_is_utf8(b"\x0a\xff\xff\xff\xff\x0f")  # a length past the end


def test_saved_models_pass(tmp_path):
    assert all_text_is_utf8(save(embedding_mlp(), tmp_path / "m.onnx").read_bytes())
