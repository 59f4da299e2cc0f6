// The torch headers every kernel file needs: torch::Tensor and its factories (torch/types.h) and the at::Tensor
// type casters PYBIND11_MODULE uses (torch/csrc/utils/pybind.h). Not torch/extension.h: it also pulls in torch/all.h
// (the C++ frontend), which none of the kernels use and which made each file take ~1.7x as long to compile.
#pragma once
#include <torch/csrc/utils/pybind.h>
#include <torch/types.h>
