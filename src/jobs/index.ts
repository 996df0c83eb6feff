// Importing a job module registers its recipe kind, runner, loader and sampler. A new job kind is one import here.
import './nsp/index.js';
import './vae/index.js';
import './dit/index.js';
import './dit-lora/index.js';

export { getJob, jobForModel, listJobs } from './registry.js';
