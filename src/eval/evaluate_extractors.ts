import { loadClipModel } from '../models/clip/clip_model.js';
import { FidInceptionV3, loadFidInceptionFromSource } from '../models/inception/index.js';
import { openWeightsSource } from '../io/pytorch_file.js';
import { inceptionFeatures } from '../models/inception/features.js';
import { clipPixelValues } from './clip_score.js';
import { registerExtractor, type FeatureExtractor } from './evaluate_features.js';

/**
 * The networks `evaluate` uses, registered by name. FID Inception: pool3 (2048) as features and the
 * logits without fc's bias (torch-fidelity's `logits_unbiased`) for the Inception Score; the resize to
 * 299 is clean-fid's 'clean' or pytorch-fid's 'legacy' bilinear (models/inception/features.ts), input
 * scaled 2x − 1 as pytorch-fid does for these weights. CLIP: the projected, unit-length image embedding
 * of HF CLIPImageProcessor's pixels, and text embeddings for CLIP-score.
 */

registerExtractor('inception-fid', {
  weightsId: 'inception-fid',
  describe: "FID Inception v3 (pytorch-fid's port of the 2015-12-05 graph)",
  create: async ({ weights, resize }) => {
    // A .pth (pytorch-fid's own file) loads directly; the weights cache holds the safetensors conversion.
    const source = openWeightsSource(weights.path);
    let model: FidInceptionV3;
    try {
      model = loadFidInceptionFromSource(source);
    } finally {
      source.close();
    }
    const extractor: FeatureExtractor = {
      name: 'inception-fid',
      cacheKey: `inception-fid|${weights.sha256}|${resize}|2x-1`,
      featureDim: model.featureDim,
      logitDim: model.config.numClasses,
      settings: { network: 'inception-fid', weights_sha256: weights.sha256, weights_file: weights.path, resize, input_scaling: '2x − 1 (pytorch-fid)', features: 'pool3', is_logits: 'logits_unbiased' },
      extract: async (images) => {
        const out = inceptionFeatures(
          model,
          images.map((img) => ({ data: img.rgb, width: img.width, height: img.height })),
          { resize, batchSize: images.length },
        );
        return { features: out.pool3, logits: out.logitsUnbiased };
      },
      dispose: () => model.dispose(),
    };
    return extractor;
  },
});

for (const id of ['clip-vit-b32', 'clip-vit-l14']) {
  registerExtractor(id, {
    weightsId: id,
    describe: `OpenAI CLIP ${id.slice(5).toUpperCase()} (Hugging Face CLIPModel)`,
    create: async ({ weights }) => {
      const clip = loadClipModel(weights.path);
      const d = clip.projectionDim;
      const rows = (vs: Float32Array[]) => {
        const out = new Float32Array(vs.length * d);
        vs.forEach((v, i) => out.set(v, i * d));
        return out;
      };
      return {
        name: id,
        cacheKey: `${id}|${weights.sha256}|clip-bicubic-crop`,
        featureDim: d,
        logitDim: 0,
        settings: { network: id, weights_sha256: weights.sha256, weights_file: weights.path, preprocessing: `HF CLIPImageProcessor: PIL bicubic short side → ${clip.imageSize}, centre crop, CLIP mean/std` },
        extract: async (images) => {
          const pixels = images.map((img) => clipPixelValues(img.rgb, img.width, img.height, clip.imageSize));
          return { features: rows(clip.encodeImages(pixels)) };
        },
        encodeTexts: async (texts) => rows(clip.encodeTexts(texts)),
        dispose: () => clip.dispose(),
      };
    },
  });
}
