import { tf } from '../src/backend/tf.js';

// Unit tests run on the reference `cpu` backend unless a test picks another one itself.
await tf.setBackend(process.env.SCALEFORGE_TEST_BACKEND ?? 'cpu');
