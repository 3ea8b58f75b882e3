"""Loss functions shared by the recipes (cross-entropy with smoothing, distillation, L2)."""
from __future__ import annotations

from keras_layers import env  # noqa: F401
import tensorflow as tf


def is_soft(labels):
    """Whether `labels` are soft targets (float, (batch, classes): Mixup's, `pipelines.data.mixup_batch`)
    rather than integer class indices (decided by dtype, a static property, so XLA-safe)."""
    dtype = labels.dtype if hasattr(labels, "dtype") else tf.convert_to_tensor(labels).dtype
    return tf.as_dtype(dtype).is_floating


def hard_labels(labels):
    """Integer class indices: `labels` themselves, or the largest share of soft (Mixup) labels."""
    return tf.argmax(labels, axis=-1, output_type=tf.int32) if is_soft(labels) else labels


def cross_entropy(labels, logits, label_smoothing=0.0):
    """Mean softmax cross-entropy of integer `labels` (or soft labels, (batch, classes) floats: Mixup)
    against `logits`, with label smoothing."""
    logits = tf.cast(logits, tf.float32)
    num_classes = tf.shape(logits)[-1]
    if is_soft(labels):
        onehot = tf.cast(labels, tf.float32)
    else:
        onehot = tf.one_hot(tf.cast(tf.reshape(labels, [-1]), tf.int32), num_classes)
    if label_smoothing:
        onehot = onehot * (1.0 - label_smoothing) + label_smoothing / tf.cast(num_classes, tf.float32)
    return tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(onehot, logits))


def distillation(student_logits, teacher_logits, temperature=1.0, t_squared=True):
    """`T^2 * KL(softmax(teacher/T) || softmax(student/T))`, mean over the batch; no gradient to the teacher.

    The T^2 factor (Hinton et al.: keeps the soft term's gradient scale independent of T) is dropped with
    ``t_squared=False`` (IMTA's Eq. 8 is the plain KL at temperature T)."""
    t = float(temperature)
    teacher = tf.stop_gradient(tf.cast(teacher_logits, tf.float32))
    p_teacher = tf.nn.softmax(teacher / t)
    log_p_teacher = tf.nn.log_softmax(teacher / t)
    log_p_student = tf.nn.log_softmax(tf.cast(student_logits, tf.float32) / t)
    kl = tf.reduce_sum(p_teacher * (log_p_teacher - log_p_student), axis=-1)
    return (t * t if t_squared else 1.0) * tf.reduce_mean(kl)


def soft_cross_entropy(student_logits, teacher_probs):
    """Cross-entropy against soft targets (probabilities), no gradient to the targets."""
    target = tf.stop_gradient(tf.cast(teacher_probs, tf.float32))
    return tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(target, tf.cast(student_logits, tf.float32)))


def l2(variables, weight_decay):
    """`weight_decay * sum ||w||^2 / 2` over kernels (not biases, BN or gates' scalars)."""
    if not weight_decay:
        return tf.constant(0.0)
    kernels = [v for v in variables if "kernel" in v.name or "depthwise" in v.name]
    if not kernels:
        return tf.constant(0.0)
    return weight_decay * tf.add_n([tf.nn.l2_loss(tf.cast(v, tf.float32)) for v in kernels])
