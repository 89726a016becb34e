"""Convert an existing ONNX file's FP32 weights to BF16, without Olive.

    python examples/convert_onnx_file.py model.onnx model_bf16.onnx
"""

import argparse

from olive_bf16_pass import ConversionOptions, convert_file

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("source", help="FP32 ONNX model (external data next to it is read too)")
parser.add_argument("destination", help="where to write the BF16 model")
args = parser.parse_args()

report = convert_file(args.source, args.destination, ConversionOptions())
print(report.summary())
