// JPEG decode and encode with the system's libjpeg-turbo (Debian's libjpeg62-turbo: the jpeglib API
// with turbo's SIMD), for curation: the same codec OpenCV and Pillow use, at a fraction of the CPU
// time that sharp's libvips pipeline spends around its mozjpeg build.
//
// Part of the image addon (image_addon.cc), built only where jpeglib.h is found, so the main backend
// addon neither needs libjpeg nor changes when it is absent. Every function is synchronous: curation
// calls them from its worker threads, one file per worker.
//
// Failures are returned, not thrown: a string with libjpeg's message (its errors and also its
// warnings, e.g. "Premature end of JPEG file": a truncated file must not become grey rows). The JS
// side then hands the file to sharp, which produces today's rejection text.
#include <algorithm>
#include <cstdio>  // jpeglib.h uses FILE and size_t without including their headers
#include <csetjmp>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <jpeglib.h>

#include "image_addon.h"
#include "napi_util.h"

namespace sfn {
namespace {

// libjpeg reports errors through error_exit, which must not return: jump back to the caller's
// setjmp. Warnings (msg_level -1) jump out too, after keeping their text.
struct ErrorManager {
  jpeg_error_mgr pub;
  jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

void onError(j_common_ptr cinfo) {
  auto* err = reinterpret_cast<ErrorManager*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, err->message);
  longjmp(err->jump, 1);
}

void onMessage(j_common_ptr cinfo, int level) {
  if (level >= 0) return;  // trace messages
  auto* err = reinterpret_cast<ErrorManager*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, err->message);
  longjmp(err->jump, 1);
}

void initErrors(ErrorManager& err) {
  jpeg_std_error(&err.pub);
  err.pub.error_exit = onError;
  err.pub.emit_message = onMessage;
  err.message[0] = '\0';
}

const char* colourSpaceName(J_COLOR_SPACE cs) {
  switch (cs) {
    case JCS_GRAYSCALE: return "grayscale";
    case JCS_YCbCr: return "ycbcr";
    case JCS_RGB: return "rgb";
    case JCS_CMYK: return "cmyk";
    case JCS_YCCK: return "ycck";
    default: return "unknown";
  }
}

uint32_t readU32(const uint8_t* p, bool le) {
  return le ? (p[0] | (p[1] << 8) | (p[2] << 16) | (static_cast<uint32_t>(p[3]) << 24))
            : ((static_cast<uint32_t>(p[0]) << 24) | (p[1] << 16) | (p[2] << 8) | p[3]);
}
uint16_t readU16(const uint8_t* p, bool le) { return le ? (p[0] | (p[1] << 8)) : ((p[0] << 8) | p[1]); }

// The Orientation tag (0x0112) of IFD0 in an APP1 "Exif\0\0" segment: 0 when absent, -1 when the
// segment is there but cannot be read (the JS side then leaves the file to sharp).
int exifOrientation(const uint8_t* data, size_t len) {
  if (len < 14 || std::memcmp(data, "Exif\0\0", 6) != 0) return 0;
  const uint8_t* tiff = data + 6;
  const size_t n = len - 6;
  bool le;
  if (tiff[0] == 'I' && tiff[1] == 'I') le = true;
  else if (tiff[0] == 'M' && tiff[1] == 'M') le = false;
  else return -1;
  if (readU16(tiff + 2, le) != 42) return -1;
  const uint32_t ifd = readU32(tiff + 4, le);
  if (ifd < 8 || static_cast<size_t>(ifd) + 2 > n) return -1;
  const unsigned entries = readU16(tiff + ifd, le);
  if (static_cast<size_t>(ifd) + 2 + entries * 12ull > n) return -1;
  for (unsigned i = 0; i < entries; i++) {
    const uint8_t* e = tiff + ifd + 2 + 12 * i;
    if (readU16(e, le) != 0x0112) continue;
    const unsigned type = readU16(e + 2, le);
    if (type != 3 || readU32(e + 4, le) != 1) return -1;  // one SHORT
    return readU16(e + 8, le);
  }
  return 0;
}

void setProperty(napi_env env, napi_value obj, const char* key, napi_value value) {
  check(env, napi_set_named_property(env, obj, key, value), "set_property");
}

}  // namespace

// header(bytes) → { width, height, components, colourSpace, progressive, orientation, icc } | message
napi_value jpegHeader(napi_env env, napi_callback_info cb) {
  napi_value argv[1];
  getArgs(env, cb, argv, "header");
  const auto bytes = typedArg<uint8_t>(env, argv[0], "bytes");
  jpeg_decompress_struct cinfo;
  ErrorManager err;
  initErrors(err);
  cinfo.err = &err.pub;
  if (setjmp(err.jump)) {
    jpeg_destroy_decompress(&cinfo);
    return makeString(env, err.message);
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, bytes.data, static_cast<unsigned long>(bytes.length));
  jpeg_save_markers(&cinfo, JPEG_APP0 + 1, 0xffff);
  jpeg_save_markers(&cinfo, JPEG_APP0 + 2, 0xffff);
  jpeg_read_header(&cinfo, TRUE);
  int orientation = 0;
  bool icc = false;
  for (jpeg_saved_marker_ptr m = cinfo.marker_list; m; m = m->next) {
    if (m->marker == JPEG_APP0 + 1 && orientation == 0) orientation = exifOrientation(m->data, m->data_length);
    if (m->marker == JPEG_APP0 + 2 && m->data_length >= 12 && std::memcmp(m->data, "ICC_PROFILE\0", 12) == 0) icc = true;
  }
  const unsigned width = cinfo.image_width, height = cinfo.image_height;
  const int components = cinfo.num_components;
  const J_COLOR_SPACE space = cinfo.jpeg_color_space;
  const bool progressive = jpeg_has_multiple_scans(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  napi_value out;
  check(env, napi_create_object(env, &out), "create_object");
  setProperty(env, out, "width", makeNumber(env, width));
  setProperty(env, out, "height", makeNumber(env, height));
  setProperty(env, out, "components", makeNumber(env, components));
  setProperty(env, out, "colourSpace", makeString(env, colourSpaceName(space)));
  setProperty(env, out, "progressive", makeBool(env, progressive));
  setProperty(env, out, "orientation", makeNumber(env, orientation));
  setProperty(env, out, "icc", makeBool(env, icc));
  return out;
}

// Writes src (w×h RGB, as stored) into dst with EXIF orientation o applied (dst is h×w for o ≥ 5).
namespace {

void orient(const uint8_t* src, unsigned w, unsigned h, int o, uint8_t* dst) {
  const unsigned ow = o >= 5 ? h : w, oh = o >= 5 ? w : h;
  for (unsigned y = 0; y < oh; y++) {
    uint8_t* row = dst + static_cast<size_t>(y) * ow * 3;
    for (unsigned x = 0; x < ow; x++) {
      unsigned sx, sy;
      switch (o) {
        case 2: sx = w - 1 - x, sy = y; break;
        case 3: sx = w - 1 - x, sy = h - 1 - y; break;
        case 4: sx = x, sy = h - 1 - y; break;
        case 5: sx = y, sy = x; break;
        case 6: sx = y, sy = h - 1 - x; break;
        case 7: sx = w - 1 - y, sy = h - 1 - x; break;
        case 8: sx = w - 1 - y, sy = x; break;
        default: sx = x, sy = y; break;
      }
      std::memcpy(row + 3 * x, src + (static_cast<size_t>(sy) * w + sx) * 3, 3);
    }
  }
}

}  // namespace

// The decompression proper; returns false with err.message set on any libjpeg error or warning.
// Kept free of objects with destructors between setjmp and the libjpeg calls that may longjmp.
// With orientation 1 the rows go straight into the JS Buffer (`*buffer`); otherwise into `pixels`, to be turned.
static bool decompress(napi_env env, const uint8_t* data, size_t length, int denom, bool direct, napi_value* buffer, std::vector<uint8_t>& pixels,
                       unsigned& width, unsigned& height, ErrorManager& err) {
  jpeg_decompress_struct cinfo;
  cinfo.err = &err.pub;
  if (setjmp(err.jump)) {
    jpeg_destroy_decompress(&cinfo);
    return false;
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, data, static_cast<unsigned long>(length));
  jpeg_read_header(&cinfo, TRUE);
  if (cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK || cinfo.num_components == 4) {
    std::snprintf(err.message, sizeof err.message, "%s JPEG (left to libvips for its colour conversion)", colourSpaceName(cinfo.jpeg_color_space));
    jpeg_destroy_decompress(&cinfo);
    return false;
  }
  // What libvips, Pillow and OpenCV use by default: accurate integer IDCT, smooth chroma upsampling.
  cinfo.out_color_space = JCS_RGB;
  cinfo.dct_method = JDCT_ISLOW;
  cinfo.do_fancy_upsampling = TRUE;
  cinfo.scale_num = 1;
  cinfo.scale_denom = static_cast<unsigned>(denom);
  jpeg_start_decompress(&cinfo);
  width = cinfo.output_width, height = cinfo.output_height;
  if (cinfo.output_components != 3) {
    std::snprintf(err.message, sizeof err.message, "decoded to %d components, expected 3", cinfo.output_components);
    jpeg_destroy_decompress(&cinfo);
    return false;
  }
  const size_t bytes = static_cast<size_t>(width) * height * 3;
  uint8_t* dst;
  if (direct) {
    void* p;
    if (napi_create_buffer(env, bytes, &p, buffer) != napi_ok) {
      std::snprintf(err.message, sizeof err.message, "cannot allocate %zu bytes", bytes);
      jpeg_destroy_decompress(&cinfo);
      return false;
    }
    dst = static_cast<uint8_t*>(p);
  } else {
    pixels.resize(bytes);
    dst = pixels.data();
  }
  while (cinfo.output_scanline < cinfo.output_height) {
    JSAMPROW rows[4];
    for (int i = 0; i < 4; i++) rows[i] = dst + static_cast<size_t>(std::min(cinfo.output_scanline + i, height - 1)) * width * 3;
    jpeg_read_scanlines(&cinfo, rows, 4);
  }
  // Reads to EOI, so damage after the last scanline is reported as well.
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  return true;
}

// decode(bytes, scaleDenom 1|2|4|8, orientation 1..8) → { rgb: Buffer, width, height } | message
napi_value jpegDecode(napi_env env, napi_callback_info cb) {
  napi_value argv[3];
  getArgs(env, cb, argv, "decode");
  const auto bytes = typedArg<uint8_t>(env, argv[0], "bytes");
  const int64_t denom = intArg(env, argv[1], "scaleDenom");
  const int64_t orientation = intArg(env, argv[2], "orientation");
  if (denom != 1 && denom != 2 && denom != 4 && denom != 8) throw JsError{"decode: scaleDenom must be 1, 2, 4 or 8"};
  if (orientation < 1 || orientation > 8) throw JsError{"decode: orientation must be 1..8"};
  ErrorManager err;
  initErrors(err);
  std::vector<uint8_t> pixels;
  unsigned w = 0, h = 0;
  const int o = static_cast<int>(orientation);
  napi_value buffer = nullptr;
  if (!decompress(env, bytes.data, bytes.length, static_cast<int>(denom), o == 1, &buffer, pixels, w, h, err)) return makeString(env, err.message);
  const unsigned ow = o >= 5 ? h : w, oh = o >= 5 ? w : h;
  if (o != 1) {
    void* dst;
    check(env, napi_create_buffer(env, pixels.size(), &dst, &buffer), "create_buffer");
    orient(pixels.data(), w, h, o, static_cast<uint8_t*>(dst));
  }
  napi_value out;
  check(env, napi_create_object(env, &out), "create_object");
  setProperty(env, out, "rgb", buffer);
  setProperty(env, out, "width", makeNumber(env, ow));
  setProperty(env, out, "height", makeNumber(env, oh));
  return out;
}

struct EncodeJob {
  const uint8_t* rgb;
  unsigned width, height;        // source
  unsigned outWidth, outHeight;  // canvas
  int left, top;                 // where the source's (0, 0) lands on the canvas (negative: cropped)
  uint8_t background[3];
  int quality;
  bool chroma444, optimize;
};

static bool compress(const EncodeJob& job, unsigned char*& out, unsigned long& outSize, std::vector<uint8_t>& row, ErrorManager& err) {
  jpeg_compress_struct cinfo;
  cinfo.err = &err.pub;
  if (setjmp(err.jump)) {
    jpeg_destroy_compress(&cinfo);
    return false;
  }
  jpeg_create_compress(&cinfo);
  jpeg_mem_dest(&cinfo, &out, &outSize);
  cinfo.image_width = job.outWidth;
  cinfo.image_height = job.outHeight;
  cinfo.input_components = 3;
  cinfo.in_color_space = JCS_RGB;
  jpeg_set_defaults(&cinfo);
  jpeg_set_quality(&cinfo, job.quality, TRUE);
  cinfo.dct_method = JDCT_ISLOW;
  cinfo.optimize_coding = job.optimize ? TRUE : FALSE;
  if (job.chroma444) {
    cinfo.comp_info[0].h_samp_factor = 1;
    cinfo.comp_info[0].v_samp_factor = 1;
  }
  jpeg_start_compress(&cinfo, TRUE);
  // Columns of the canvas the source covers.
  const int x0 = std::max(0, job.left), x1 = std::min(static_cast<int>(job.outWidth), job.left + static_cast<int>(job.width));
  while (cinfo.next_scanline < cinfo.image_height) {
    const int y = static_cast<int>(cinfo.next_scanline);
    const int sy = y - job.top;
    uint8_t* r = row.data();
    if (sy >= 0 && sy < static_cast<int>(job.height) && x1 > x0) {
      const uint8_t* src = job.rgb + (static_cast<size_t>(sy) * job.width + (x0 - job.left)) * 3;
      // Rows fully inside the source go to libjpeg without a copy.
      if (x0 == 0 && x1 == static_cast<int>(job.outWidth)) {
        JSAMPROW direct = const_cast<uint8_t*>(src);
        jpeg_write_scanlines(&cinfo, &direct, 1);
        continue;
      }
      for (int x = 0; x < x0; x++) std::memcpy(r + 3 * x, job.background, 3);
      std::memcpy(r + 3 * x0, src, static_cast<size_t>(x1 - x0) * 3);
      for (int x = x1; x < static_cast<int>(job.outWidth); x++) std::memcpy(r + 3 * x, job.background, 3);
    } else {
      for (unsigned x = 0; x < job.outWidth; x++) std::memcpy(r + 3 * x, job.background, 3);
    }
    JSAMPROW rp = r;
    jpeg_write_scanlines(&cinfo, &rp, 1);
  }
  jpeg_finish_compress(&cinfo);
  jpeg_destroy_compress(&cinfo);
  return true;
}

// encode(rgb, width, height, outWidth, outHeight, left, top, background [r,g,b] Uint8Array, quality,
//        chroma444, optimize) → Buffer. The canvas is outWidth × outHeight in the background colour
// with the source placed at (left, top): a centred pad or crop without a copy of the pixels.
napi_value jpegEncode(napi_env env, napi_callback_info cb) {
  napi_value argv[11];
  getArgs(env, cb, argv, "encode");
  const auto rgb = typedArg<uint8_t>(env, argv[0], "rgb");
  EncodeJob job{};
  job.rgb = rgb.data;
  const int64_t w = intArg(env, argv[1], "width"), h = intArg(env, argv[2], "height");
  const int64_t ow = intArg(env, argv[3], "outWidth"), oh = intArg(env, argv[4], "outHeight");
  if (w < 1 || h < 1 || ow < 1 || oh < 1 || ow > 65500 || oh > 65500) throw JsError{"encode: sizes must be 1..65500"};
  if (static_cast<int64_t>(rgb.length) < w * h * 3) throw JsError{"encode: rgb holds fewer than width × height × 3 bytes"};
  job.width = static_cast<unsigned>(w), job.height = static_cast<unsigned>(h);
  job.outWidth = static_cast<unsigned>(ow), job.outHeight = static_cast<unsigned>(oh);
  job.left = static_cast<int>(intArg(env, argv[5], "left"));
  job.top = static_cast<int>(intArg(env, argv[6], "top"));
  const auto bg = typedArg<uint8_t>(env, argv[7], "background");
  if (bg.length < 3) throw JsError{"encode: background must hold 3 bytes"};
  std::memcpy(job.background, bg.data, 3);
  job.quality = static_cast<int>(intArg(env, argv[8], "quality"));
  if (job.quality < 1 || job.quality > 100) throw JsError{"encode: quality must be 1..100"};
  job.chroma444 = boolArg(env, argv[9], "chroma444");
  job.optimize = boolArg(env, argv[10], "optimize");
  ErrorManager err;
  initErrors(err);
  std::vector<uint8_t> row(static_cast<size_t>(ow) * 3);
  unsigned char* out = nullptr;
  unsigned long outSize = 0;
  const bool ok = compress(job, out, outSize, row, err);
  if (!ok) {
    std::free(out);
    throw JsError{std::string("JPEG encode failed: ") + err.message};
  }
  napi_value buffer;
  void* dst;
  const napi_status status = napi_create_buffer_copy(env, outSize, out, &dst, &buffer);
  std::free(out);
  check(env, status, "create_buffer_copy");
  return buffer;
}

napi_value jpegVersion(napi_env env, napi_callback_info) {
  return makeString(env, std::to_string(LIBJPEG_TURBO_VERSION_NUMBER / 1000000) + '.' + std::to_string(LIBJPEG_TURBO_VERSION_NUMBER / 1000 % 1000) + '.' +
                             std::to_string(LIBJPEG_TURBO_VERSION_NUMBER % 1000));
}

}  // namespace sfn
