// Importing a job module registers its recipe kind and runner. A new job kind is one import here.
import './nsp/index.js';
import './vae/index.js';
import './dit/index.js';

export { getJob, listJobs } from './registry.js';
