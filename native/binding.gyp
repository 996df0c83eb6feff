{
  "targets": [
    {
      "target_name": "scaleforge_native",
      "sources": ["src/addon.cc", "src/conv.cc", "src/matmul.cc", "src/dnnl_util.cc", "src/elementwise.cc", "src/unary.cc", "src/reduce.cc", "src/norm.cc", "src/optim.cc", "src/activation.cc", "src/layout.cc", "src/pool_resize.cc", "src/lapack.cc", "src/attention.cc", "src/fused_conv.cc", "src/fused_norm.cc", "src/bf16.cc", "src/signal_shield.cc"],
      "defines": ["NAPI_VERSION=8"],
      "cflags_cc": ["-std=c++17", "-fexceptions", "-fopenmp", "-ffp-contract=off", "-fno-trapping-math", "-fno-math-errno"],
      "cflags_cc!": ["-fno-exceptions", "-std=gnu++17"],
      "cflags": ["<!@(pkg-config --cflags openblas 2>/dev/null || true)"],
      "ldflags": ["-fopenmp"],
      "libraries": ["-ldnnl", "<!@(pkg-config --libs openblas 2>/dev/null || echo -lopenblas)"]
    }
  ],
  "conditions": [
    ["<!(sh ./jpeg_available.sh)==1", {
      "targets": [
        {
          "target_name": "scaleforge_image",
          "sources": ["src/image_addon.cc", "src/jpeg.cc", "src/pil_resample.cc", "src/luma_measures.cc"],
          "defines": ["NAPI_VERSION=8"],
          "cflags_cc": ["-std=c++17", "-fexceptions", "-O3", "-ffp-contract=off"],
          "cflags_cc!": ["-fno-exceptions", "-std=gnu++17"],
          "libraries": ["-ljpeg"]
        }
      ]
    }]
  ]
}
