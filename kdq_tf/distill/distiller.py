"""`Distiller`: a keras.Model that trains a student against a frozen teacher.

Follows the keras-io knowledge-distillation example (teacher and student as
attributes, custom train_step/test_step), with two changes: the teacher's
logits may come precomputed with the batch (`x, (y, teacher_logits)`), and
losses are averaged over the global batch so the step is correct under any
`tf.distribute` strategy.
"""

from kdq_tf._keras import keras, tf
from kdq_tf.config import DistillConfig
from kdq_tf.distill.losses import LossWeights, distillation_loss


class Distiller(keras.Model):
    """Wraps `student` (trained) and `teacher` (frozen, may be None with cached guidance).

    Args:
        student: the model being trained; may be a TF-MOT quantized model.
        teacher: produces logits when a batch carries none. Defaults to None.
    """

    def __init__(self, student: keras.Model, teacher: keras.Model | None = None, **kwargs):
        super().__init__(**kwargs)
        self.student = student
        self.teacher = teacher
        if teacher is not None:
            teacher.trainable = False
        # Built now, from the student's input: BackupAndRestore and fit then see a built model
        # (an unbuilt one makes Keras warn at every checkpoint, and cannot restore weights).
        self.build(student.input_shape)

    def get_config(self):
        """The student and teacher, serialized, so Keras can describe (and checkpoint) the
        wrapper."""
        return {
            "name": self.name,
            "student": keras.saving.serialize_keras_object(self.student),
            "teacher": keras.saving.serialize_keras_object(self.teacher)
            if self.teacher is not None
            else None,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        student = keras.saving.deserialize_keras_object(config.pop("student"))
        teacher = config.pop("teacher")
        return cls(
            student, keras.saving.deserialize_keras_object(teacher) if teacher else None, **config
        )

    def compile(
        self,
        optimizer="adam",
        metrics=None,
        temperature: float = DistillConfig.temperature,
        loss_weights: LossWeights = LossWeights(),
        soft_loss: str = "kl",
        hard_loss: str = "ce",
        soft_params: dict | None = None,
        **kwargs,
    ):
        """Configures the optimizer and the distillation loss.

        Args:
            optimizer: a Keras optimizer for the student's variables.
            metrics: extra metrics on (labels, student logits). Accuracy is always tracked.
            temperature: softening temperature T > 0. Defaults to `DistillConfig`'s (2.0),
                so the library and the CLI distill alike.
            loss_weights: `LossWeights` (lambda or alpha form). Defaults to soft=1, hard=0.5.
            soft_loss: "kl", "ce", "dist" or "dkd" (kdq_tf.distill.losses). Defaults to "kl".
            hard_loss: "ce" or "mse". Defaults to "ce".
            soft_params: DIST's beta and gamma, or DKD's alpha and beta; the papers' defaults
                otherwise.
        """
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        super().compile(optimizer=optimizer, **kwargs)
        self.temperature = float(temperature)
        self.loss_weights_ = loss_weights
        self.soft_kind, self.hard_kind = soft_loss, hard_loss
        self.soft_params = dict(soft_params or {})
        self.total_tracker = keras.metrics.Mean(name="loss")
        self.soft_tracker = keras.metrics.Mean(name="soft_loss")
        self.hard_tracker = keras.metrics.Mean(name="hard_loss")
        self.acc = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        self.extra_metrics = list(metrics or [])

    @property
    def metrics(self):
        return [
            self.total_tracker,
            self.soft_tracker,
            self.hard_tracker,
            self.acc,
            *self.extra_metrics,
        ]

    def call(self, x, training=False):
        return self.student(x, training=training)  # (batch, classes) logits

    def _unpack(self, data):
        x, target = data
        if isinstance(target, (tuple, list)):
            y, teacher_logits = target
        else:
            y, teacher_logits = target, None
        if teacher_logits is None:
            if self.teacher is None:
                raise ValueError("Distiller has no teacher and the batch carries no teacher logits")
            teacher_logits = self.teacher(x, training=False)  # (batch, classes)
        return x, y, tf.stop_gradient(teacher_logits)

    def _loss_terms(self, y, teacher_logits, student_logits):
        return distillation_loss(
            y,
            teacher_logits,
            student_logits,
            self.temperature,
            self.loss_weights_,
            self.soft_kind,
            self.hard_kind,
            self.soft_params,
        )

    def _record(self, y, student_logits, total, soft, hard):
        self.total_tracker.update_state(total)
        self.soft_tracker.update_state(soft)
        self.hard_tracker.update_state(hard)
        self.acc.update_state(y, student_logits)
        for m in self.extra_metrics:
            m.update_state(y, student_logits)
        return {m.name: m.result() for m in self.metrics}

    def train_step(self, data):
        x, y, teacher_logits = self._unpack(data)
        with tf.GradientTape() as tape:
            student_logits = self.student(x, training=True)
            total, soft, hard = self._loss_terms(y, teacher_logits, student_logits)
            # Per-example mean over the GLOBAL batch: gradients are summed across replicas.
            loss = tf.nn.compute_average_loss(total)
            if self.student.losses:
                loss += tf.nn.scale_regularization_loss(tf.add_n(self.student.losses))
        variables = self.student.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return self._record(y, student_logits, total, soft, hard)

    def test_step(self, data):
        x, y, teacher_logits = self._unpack(data)
        student_logits = self.student(x, training=False)
        total, soft, hard = self._loss_terms(y, teacher_logits, student_logits)
        return self._record(y, student_logits, total, soft, hard)
