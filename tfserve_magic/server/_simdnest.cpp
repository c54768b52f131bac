// The compiled half of the SIMD tier (simd_decode.py, issue 23): one call parses a predict
// body with simdjson's DOM parser and, in the same walk of its tape, proves each numeric nest
// rectangular and copies its numbers into flat buffers. The pure-Python half
// (pysimdjson + bytes.translate) proves the same things in two more passes over the body;
// docs/codec.md has the measurements. Built from pysimdjson's own copy of simdjson
// (setup.py); when it cannot be built, simd_decode.py uses pysimdjson alone.
//
// parse(body: bytes) -> None | (signature_name, row, payload)
//   payload: a nest, or {name: nest} for columnar named inputs
//   nest: (shape, doubles, ints, kind)
//     shape   tuple of ints (no zero dims, rank 1..64)
//     doubles bytearray of float64, every number as simdjson's get_double reads it
//     ints    bytearray of 64-bit integers (bit patterns) or None when a number is a decimal
//     kind    which integer reads as_buffer would allow: holds "i" when every number is an
//             integer within int64, "u" when every number is a non-negative integer within
//             uint64 ("iu", "i", "u" or ""); "d" when some number is a decimal
// None means "not proved here": the caller falls back to the exact tiers, which answer with
// TF Serving's values and error texts. Nothing here raises for bad input.

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "simdjson.h"

namespace {

using simdjson::dom::array;
using simdjson::dom::element;
using simdjson::dom::element_type;
using simdjson::dom::object;

constexpr size_t kMaxRank = 64;                   // numpy's limit (codec.MAX_DIMS)
constexpr size_t kReuseBytes = size_t(16) << 20;  // larger bodies get a parser of their own
constexpr uint64_t kSizeSaturated = 0xFFFFFF;     // simdjson's array sizes saturate here

// One tensor: the dense shape from the first elements, and its numbers as doubles and (while
// no decimal is seen) as 64-bit integers, in order.
struct Nest {
  std::vector<Py_ssize_t> shape;
  size_t count = 0;
  std::unique_ptr<double[]> doubles;  // count values, copied out to Python under the GIL
  std::unique_ptr<int64_t[]> ints;
  bool decimal = false;   // some number is a double on simdjson's tape
  bool negative = false;  // some integer is below zero
  bool big = false;       // some integer is above INT64_MAX (a uint64 on the tape)
};

struct Body {
  std::string signature_name;
  bool row = false;
  bool named = false;
  std::vector<std::string> names;  // columnar named inputs, in the body's order
  std::vector<Nest> nests;
};

// The shape from the first elements: a chain of non-empty arrays ending in a number.
bool dense_shape(element value, Nest &nest) {
  size_t count = 1;
  while (value.type() == element_type::ARRAY) {
    array items = value.get_array().value_unsafe();
    uint64_t size = items.size();
    if (size == 0 || size >= kSizeSaturated || nest.shape.size() == kMaxRank) return false;
    nest.shape.push_back(static_cast<Py_ssize_t>(size));
    if (count > SIZE_MAX / size) return false;
    count *= size;
    value = *items.begin();
  }
  element_type leaf = value.type();
  if (nest.shape.empty() || (leaf != element_type::INT64 && leaf != element_type::UINT64 &&
                             leaf != element_type::DOUBLE))
    return false;
  nest.count = count;
  return true;
}

// Copies one number from the tape; false for anything else.
inline bool take(element child, Nest &nest, double *doubles, int64_t *ints, size_t &at) {
  switch (child.type()) {
    case element_type::INT64: {
      int64_t value = child.get_int64().value_unsafe();
      doubles[at] = static_cast<double>(value);
      ints[at] = value;
      nest.negative |= value < 0;
      break;
    }
    case element_type::UINT64: {
      uint64_t value = child.get_uint64().value_unsafe();
      doubles[at] = static_cast<double>(value);
      ints[at] = static_cast<int64_t>(value);
      nest.big = true;
      break;
    }
    case element_type::DOUBLE:
      doubles[at] = child.get_double().value_unsafe();
      nest.decimal = true;
      break;
    default:  // true/false/null, a string, an object, an array below the last level
      return false;
  }
  ++at;
  return true;
}

// Every array at depth d holds shape[d] items; arrays above the last level hold arrays, the
// last level numbers. Numbers are copied in order as they are proved. The last two levels are
// one loop (images end in [..., 28, 1]: one call per row, not per pixel).
bool fill(array items, size_t depth, Nest &nest, size_t &at) {
  const size_t rank = nest.shape.size();
  if (items.size() != static_cast<uint64_t>(nest.shape[depth])) return false;
  double *doubles = nest.doubles.get();
  int64_t *ints = nest.ints.get();
  if (depth + 1 == rank) {
    for (element child : items)
      if (!take(child, nest, doubles, ints, at)) return false;
    return true;
  }
  if (depth + 2 == rank) {
    const uint64_t last = static_cast<uint64_t>(nest.shape[depth + 1]);
    for (element child : items) {
      array row;
      if (child.type() != element_type::ARRAY) return false;
      row = child.get_array().value_unsafe();
      if (row.size() != last) return false;
      for (element number : row)
        if (!take(number, nest, doubles, ints, at)) return false;
    }
    return true;
  }
  for (element child : items) {
    if (child.type() != element_type::ARRAY) return false;
    if (!fill(child.get_array().value_unsafe(), depth + 1, nest, at)) return false;
  }
  return true;
}

// `size` is the body's: a nest has fewer numbers than the body has bytes, so a first chain
// that claims more (a small body posing as a huge tensor) is refused before any allocation.
bool read_nest(element value, Nest &nest, size_t size) {
  if (value.type() != element_type::ARRAY || !dense_shape(value, nest)) return false;
  if (nest.count > size) return false;
  nest.doubles.reset(new double[nest.count]);
  nest.ints.reset(new int64_t[nest.count]);
  size_t at = 0;
  return fill(value.get_array().value_unsafe(), 0, nest, at) && at == nest.count;
}

bool distinct(const std::vector<std::string_view> &keys) {
  for (size_t i = 0; i < keys.size(); ++i)
    for (size_t j = i + 1; j < keys.size(); ++j)
      if (keys[i] == keys[j]) return false;
  return true;
}

// The body's rules, as simd_decode.parse states them: only signature_name (a string) and one
// of instances/inputs, no duplicate keys, columnar named inputs with distinct names.
bool read_body(simdjson::dom::parser &parser, const char *data, size_t size, bool copy,
               Body &out) {
  element doc;
  if (parser.parse(data, size, copy).get(doc)) return false;
  object fields;
  if (doc.get_object().get(fields)) return false;
  std::vector<std::string_view> keys;
  int payloads = 0;
  for (auto field : fields) {
    keys.push_back(field.key);
    if (field.key == "signature_name") {
      std::string_view name;
      if (field.value.get_string().get(name)) return false;
      out.signature_name.assign(name);
    } else if (field.key == "instances" || field.key == "inputs") {
      ++payloads;
      out.row = field.key == "instances";
      object named;
      if (!out.row && !field.value.get_object().get(named)) {
        std::vector<std::string_view> names;
        for (auto input : named) {
          names.push_back(input.key);
          out.names.emplace_back(input.key);
          out.nests.emplace_back();
          if (!read_nest(input.value, out.nests.back(), size)) return false;
        }
        if (names.empty() || !distinct(names)) return false;
        out.named = true;
      } else {
        out.nests.emplace_back();
        if (!read_nest(field.value, out.nests.back(), size)) return false;
      }
    } else {
      return false;
    }
  }
  return payloads == 1 && distinct(keys);
}

PyObject *bytearray_of(const void *data, size_t bytes) {
  return PyByteArray_FromStringAndSize(static_cast<const char *>(data),
                                       static_cast<Py_ssize_t>(bytes));
}

PyObject *nest_tuple(const Nest &nest) {
  PyObject *shape = PyTuple_New(static_cast<Py_ssize_t>(nest.shape.size()));
  if (!shape) return nullptr;
  for (size_t i = 0; i < nest.shape.size(); ++i)
    PyTuple_SET_ITEM(shape, i, PyLong_FromSsize_t(nest.shape[i]));
  PyObject *doubles = bytearray_of(nest.doubles.get(), nest.count * sizeof(double));
  PyObject *ints = nullptr;
  const char *kind = "d";
  if (!nest.decimal) {
    ints = bytearray_of(nest.ints.get(), nest.count * sizeof(int64_t));
    kind = nest.big ? (nest.negative ? "" : "u") : (nest.negative ? "i" : "iu");
  } else {
    Py_INCREF(Py_None);
    ints = Py_None;
  }
  if (!doubles || !ints) {
    Py_DECREF(shape);
    Py_XDECREF(doubles);
    Py_XDECREF(ints);
    return nullptr;
  }
  return Py_BuildValue("(NNNs)", shape, doubles, ints, kind);
}

PyObject *body_tuple(const Body &body) {
  PyObject *payload;
  if (body.named) {
    payload = PyDict_New();
    if (!payload) return nullptr;
    for (size_t i = 0; i < body.nests.size(); ++i) {
      PyObject *nest = nest_tuple(body.nests[i]);
      PyObject *name = PyUnicode_DecodeUTF8(body.names[i].data(),
                                            static_cast<Py_ssize_t>(body.names[i].size()),
                                            "strict");
      if (!nest || !name || PyDict_SetItem(payload, name, nest) < 0) {
        Py_XDECREF(nest);
        Py_XDECREF(name);
        Py_DECREF(payload);
        return nullptr;
      }
      Py_DECREF(nest);
      Py_DECREF(name);
    }
  } else {
    payload = nest_tuple(body.nests.front());
    if (!payload) return nullptr;
  }
  PyObject *signature = PyUnicode_DecodeUTF8(
      body.signature_name.data(), static_cast<Py_ssize_t>(body.signature_name.size()),
      "strict");
  if (!signature) {
    Py_DECREF(payload);
    return nullptr;
  }
  return Py_BuildValue("(NON)", signature, body.row ? Py_True : Py_False, payload);
}

// Per thread, for bodies up to kReuseBytes: the parser and a padded copy of the body (simdjson
// reads up to SIMDJSON_PADDING bytes past the end), kept so their memory is not mapped anew
// for each request; larger bodies get their own, freed after the call.
struct Reused {
  simdjson::dom::parser parser;
  std::unique_ptr<char[]> padded;
  size_t capacity = 0;
};
thread_local std::unique_ptr<Reused> reused;

bool read_any(const char *data, size_t size, Body &body) {
  if (size > kReuseBytes) {
    simdjson::dom::parser parser;
    return read_body(parser, data, size, true, body);
  }
  if (!reused) reused.reset(new Reused());
  if (reused->capacity < size) {
    reused->padded.reset(new char[size + simdjson::SIMDJSON_PADDING]);
    reused->capacity = size;
  }
  std::memcpy(reused->padded.get(), data, size);
  std::memset(reused->padded.get() + size, 0, simdjson::SIMDJSON_PADDING);
  return read_body(reused->parser, reused->padded.get(), size, false, body);
}

PyObject *parse(PyObject *, PyObject *arg) {
  if (!PyBytes_Check(arg)) {
    PyErr_SetString(PyExc_TypeError, "parse() takes bytes");
    return nullptr;
  }
  const char *data = PyBytes_AS_STRING(arg);
  size_t size = static_cast<size_t>(PyBytes_GET_SIZE(arg));
  Body body;
  bool proved = false;
  // The GIL is let go while parsing and copying, so other threads (status calls, other
  // requests) run; the bytes object is immutable and held by the caller.
  Py_BEGIN_ALLOW_THREADS
  try {
    proved = read_any(data, size, body);
  } catch (const std::exception &) {  // std::bad_alloc from a huge body: the exact tiers try
    proved = false;
  }
  Py_END_ALLOW_THREADS
  if (!proved) Py_RETURN_NONE;
  PyObject *result = body_tuple(body);
  if (!result) {  // out of memory, or a name Python will not decode: the exact tiers answer
    PyErr_Clear();
    Py_RETURN_NONE;
  }
  return result;
}

PyMethodDef methods[] = {
    {"parse", parse, METH_O, "parse(body) -> None | (signature_name, row, payload)"},
    {nullptr, nullptr, 0, nullptr},
};

PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_simdnest",
    "simdjson parse + rectangular-nest proof + flat copy in one call (simd_decode.py).", -1,
    methods,
};

}  // namespace

PyMODINIT_FUNC PyInit__simdnest(void) { return PyModule_Create(&module); }
