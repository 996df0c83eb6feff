// The one place that imports TensorFlow.js. The union package's CommonJS node bundle is the only
// entry that brings ops, gradients and chained ops together; its ESM subpaths do not resolve in Node.
import * as tf from '@tensorflow/tfjs';

// PROD silences tfjs's console warnings (the "install our node backend" banner on every run);
// `scaleforge env` reports the backends instead.
tf.env().set('PROD', true);

export { tf };
export type Tensor = tf.Tensor;
export type Variable = tf.Variable;
export type Rank = tf.Rank;
