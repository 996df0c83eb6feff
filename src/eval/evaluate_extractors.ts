import { tf } from '../backend/tf.js';
import { clipPreprocess } from '../models/clip/preprocess.js';
import { loadClipModel } from '../models/clip/clip_model.js';
import { loadFidInception } from '../models/inception/index.js';
import { registerExtractor, type FeatureExtractor } from './evaluate_features.js';
import { resizeForInception } from './resize.js';

/**
 * The networks `evaluate` uses, registered by name. FID Inception: pool3 (2048) as features and the
 * logits without fc's bias (torch-fidelity's `logits_unbiased`) for the Inception Score; the resize to
 * 299 is clean-fid's 'clean' or pytorch-fid's 'legacy' bilinear, and the input scaling follows the same
 * reference ((x·255 − 128)/128 for clean, 2x − 1 for legacy). CLIP: the projected, unit-length image
 * embedding, and text embeddings for CLIP-score.
 */

registerExtractor('inception-fid', {
  weightsId: 'inception-fid',
  describe: "FID Inception v3 (pytorch-fid's port of the 2015-12-05 graph)",
  create: async ({ weights, resize }) => {
    const model = loadFidInception(weights.path);
    const scaling = resize === 'clean' ? 'clean-fid' : 'pytorch-fid';
    const extractor: FeatureExtractor = {
      name: 'inception-fid',
      cacheKey: `inception-fid|${weights.sha256}|${resize}|${scaling}`,
      featureDim: model.featureDim,
      logitDim: model.config.numClasses,
      settings: { network: 'inception-fid', weights_sha256: weights.sha256, weights_file: weights.path, resize, input_scaling: scaling, features: 'pool3', is_logits: 'logits_unbiased' },
      extract: async (images) => {
        const side = 299;
        const flat = new Float32Array(images.length * side * side * 3);
        images.forEach((img, i) => flat.set(resizeForInception({ data: img.rgb, width: img.width, height: img.height }, resize, side), i * side * side * 3));
        const x = tf.tensor4d(flat, [images.length, side, side, 3]);
        const out = model.forward(x, scaling);
        x.dispose();
        const features = (await out.pool3.data()) as Float32Array;
        const logits = (await out.logitsUnbiased.data()) as Float32Array;
        out.pool3.dispose();
        out.logits.dispose();
        out.logitsUnbiased.dispose();
        return { features, logits };
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
        settings: { network: id, weights_sha256: weights.sha256, weights_file: weights.path, preprocessing: `bicubic short side → ${clip.imageSize}, centre crop, CLIP mean/std` },
        extract: async (images) => {
          const pixels = await Promise.all(images.map((img) => clipPreprocess(img, clip.imageSize)));
          return { features: rows(clip.encodeImages(pixels)) };
        },
        encodeTexts: async (texts) => rows(clip.encodeTexts(texts)),
        dispose: () => clip.dispose(),
      };
    },
  });
}
